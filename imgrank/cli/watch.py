"""`imgrank watch`, `service`: the daemon and its systemd unit (daemon/, service.py)."""

from __future__ import annotations

import logging
import sys

import click

from imgrank import service as svc
from imgrank.cli.common import (
    PrintableFormatter,
    handles_errors,
    say,
    xmp_options,
)
from imgrank.daemon.heartbeat import StoreGone


@click.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--settle", default=2.0, show_default=True, help="Seconds a file must hold still to be read.")
@click.option(
    "--reorder-interval", default=30.0, show_default=True, help="At most one reorder per this many seconds."
)
@click.option("--retrain-after", default=20, show_default=True, help="Retrain after N new labels (0: off).")
@click.option("--no-learn-from-deletes", is_flag=True, help="Deleting a photo does not label it `delete`.")
@click.option(
    "--max-delete-burst",
    default=20,
    show_default=True,
    help="More deletions than this at once is a folder wipe: nothing is learnt from them.",
)
@click.option("--polling", is_flag=True, help="Poll instead of inotify (network shares).")
@click.option("--top", type=click.IntRange(min=1), help="Order only the N least-wanted (as `order --top`).")
@click.option(
    "--oldest-first", is_flag=True, help="Least-wanted get the oldest times (as `order --oldest-first`)."
)
@click.option("--model", envvar="IMGRANK_MODEL", help="Embedding model: a uform hub id or a local directory.")
@xmp_options
@click.pass_context
@handles_errors
def watch(ctx, roots, no_learn_from_deletes, **options):
    """Run the daemon: catch up, then index, score and order new photos as they arrive, and learn
    from the ones you delete. Stops cleanly on SIGTERM or Ctrl-C.

    ROOTS are remembered, so later runs need none.

    \b
    Example:
        imgrank watch ~/Pictures
        imgrank service install --enable   # run it as a systemd user service
    """
    from imgrank.daemon.entry import run_watch  # lazy: watchdog
    from imgrank.daemon.loop import WatchConfig  # lazy: watchdog

    quiet = ctx.find_root().obj.get("quiet")
    level = logging.WARNING if quiet else logging.INFO
    fmt = "%(asctime)s %(levelname)s %(message)s"  # the time of each arrival, move and deletion
    logging.basicConfig(level=level, format=fmt, datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # file names in the log: no terminal escapes either
        handler.setFormatter(PrintableFormatter(fmt, "%Y-%m-%d %H:%M:%S"))

    try:
        run_watch(list(roots), WatchConfig(learn_from_deletes=not no_learn_from_deletes, **options))
    except StoreGone:  # already logged, in one line
        ctx.exit(1)


@click.group()
def service():
    """Run `imgrank watch` as a systemd user service.

    \b
    Example:
        imgrank service install --enable
        journalctl --user -u imgrank-watch -f
    """


@service.command("install")
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--enable", is_flag=True, help="Also run `systemctl --user daemon-reload` and `enable --now`.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.pass_context
@handles_errors
def service_install(ctx, roots, enable, print_only):
    """Write the imgrank-watch user unit (for ROOTS, default: the remembered folders) to
    ~/.config/systemd/user/, and print or run the systemctl line that starts it.

    \b
    Example:
        imgrank service install ~/Pictures
        imgrank service install --enable
    """

    unit_roots = svc.resolve_roots(roots)
    if print_only:
        click.echo(svc.render_unit(unit_roots), nl=False)
        return
    path = svc.install(unit_roots)
    say(ctx, f"wrote {path}")
    if enable:
        svc.enable(path)
        click.echo("imgrank-watch is running; logs: journalctl --user -u imgrank-watch -f")
    else:
        click.echo(svc.ENABLE_LINE)
