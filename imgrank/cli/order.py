"""`imgrank order`, `restore`: photo times (order.py, store/owntimes.py)."""

from __future__ import annotations

from dataclasses import asdict

import click

from imgrank.cli.common import (
    emit,
    handles_errors,
    json_option,
    open_db,
    say,
    xmp_options,
)
from imgrank.cli_text import (
    order_summary,
    restore_summary,
    xmp_summary,
)
from imgrank.errors import Unfinished
from imgrank.files import shown_path


def _when(ns: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _report_failures(ctx, failed: list[tuple[str, str]], exit: bool = True) -> None:

    for path, reason in failed:
        click.echo(f"{shown_path(path)}: {reason}", err=True)
    if failed and exit:
        ctx.exit(1)


@click.command()
@click.option(
    "--step",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Seconds between neighbours (2 keeps the order on FAT and network shares).",
)
@click.option("--top", "top_n", type=click.IntRange(min=1), help="Touch only the N least-wanted photos.")
@click.option(
    "--oldest-first", is_flag=True, help="Least-wanted get the oldest times (viewers sorted oldest first)."
)
@click.option(
    "--keep-places",
    is_flag=True,
    help="Photos still in order keep their times; only the others move (fewer changes for backups).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@xmp_options
@json_option
@click.pass_context
@handles_errors
def order(ctx, step, top_n, oldest_first, keep_places, dry_run, xmp, xmp_style, as_json):
    """Set photo mtimes in score order: a viewer sorted by date shows the least-wanted first.

    The newest time goes to the highest deletion score, ending at now, one --step apart. Each
    file's original mtime is stored before it is first changed; `imgrank restore` puts it back.
    Access times and the photos' bytes are never changed.

    \b
    Example:
        imgrank order                  # then sort your viewer by date, newest first
        imgrank order --top 200        # touch only the 200 least-wanted
        imgrank order --step 10 --keep-places   # later runs move only what must move
        imgrank order --dry-run | head
        imgrank order --top 200 --xmp --xmp-style digikam   # and ratings in sidecars
    """
    from imgrank.order import order as run_order  # lazy: sqlite_utils

    db = open_db()
    try:
        result = run_order(
            db, step=step, top=top_n, oldest_first=oldest_first, dry_run=dry_run, keep_places=keep_places
        )
    except Unfinished as e:  # what was done is said first, then the error
        emit(e.result.as_dict(), as_json, f"stopped part-way: {order_summary(e.result)}")  # even with -q
        _report_skipped(ctx, e.result.skipped)
        _report_failures(ctx, e.result.failed, exit=False)
        raise
    rated = _write_xmp(db, xmp_style, top_n) if xmp and not dry_run else None
    if as_json:
        emit({**result.as_dict(), **({"xmp": asdict(rated)} if rated else {})}, True)
    elif dry_run:
        for p in result.plan:
            when = f"{_when(p['mtime_ns'])} -> {_when(p['new_mtime_ns'])}"
            click.echo(f"{p['score']:.3f}  {when}  {shown_path(p['path'])}")
        click.echo(f"dry run: {order_summary(result, dry_run=True)}")
    elif result.ordered == 0:
        click.echo(
            "nothing to order: no scored photos under the roots (run `imgrank scan` and `imgrank train`)"
        )
    else:
        click.echo(order_summary(result))
    if rated and not as_json:
        click.echo(xmp_summary(rated, xmp_style))
    for warning in result.warnings:
        say(ctx, f"warning: {warning}")
    _report_skipped(ctx, result.skipped)
    _report_failures(ctx, result.failed + (rated.failed if rated else []))


def _write_xmp(db, style: str, top: int | None):
    """The order as XMP ratings in sidecars (sidecars.py), for every scored photo."""
    from imgrank import sidecars  # lazy: sqlite_utils
    from imgrank.ranking import photo_files  # lazy: sqlite_utils

    return sidecars.write_ratings(db, photo_files(db), style, top)


def _report_skipped(ctx, skipped: list[tuple[str, str]]) -> None:
    """Photos deleted since the last scan, or edited while ordering: one line each kind, no failure."""
    from imgrank.store.owntimes import VANISHED  # lazy: sqlite_utils

    for kind, text in ((True, "deleted since the last scan (not ordered; `imgrank scan` forgets them)"),
                       (False, "changed while ordering or left out (not touched)")):  # fmt: skip
        paths = [p for p, why in skipped if (why == VANISHED) == kind]
        if paths:
            shown = ", ".join(paths[:10]) + (f" (and {len(paths) - 10} more)" if len(paths) > 10 else "")
            say(ctx, f"{len(paths)} {'photo' if len(paths) == 1 else 'photos'} {text}: {shown}")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--force", is_flag=True, help="Also restore files whose mtime someone changed since.")
@click.option(
    "--forget-missing",
    is_flag=True,
    help="Drop the records of files not found anywhere under the roots (deleted for good).",
)
@json_option
@click.pass_context
@handles_errors
def restore(ctx, paths, force, forget_missing, as_json):
    """Put back the original mtimes imgrank changed (all, or of files under PATHS).

    A file whose mtime was changed by someone else since imgrank set it is reported and left
    alone (--force restores it anyway). A file moved since is found under the roots by its
    content and restored where it is; one not found (deleted, or on a disk not mounted now)
    keeps its record for later, unless --forget-missing.

    \b
    Example:
        imgrank restore
        imgrank restore ~/Pictures/2024
    """
    from imgrank import sidecars  # lazy: sqlite_utils
    from imgrank.order import restore as run_restore  # lazy: sqlite_utils

    db = open_db()
    try:
        result = run_restore(db, paths or None, force=force, forget_missing=forget_missing)
    except Unfinished as e:  # what was done is said first, then the error
        emit(e.result.as_dict(), as_json, f"stopped part-way: {restore_summary(e.result)}")  # even with -q
        _report_failures(ctx, e.result.failed, exit=False)
        raise
    xmp = sidecars.restore(db, paths or None, force=force)  # and every XMP sidecar `order --xmp` wrote
    d = result.as_dict() | ({"sidecars": asdict(xmp)} if xmp != sidecars.SidecarRestore() else {})
    emit(d, as_json, restore_summary(result, xmp))
    if result.gone:
        say(
            ctx,
            f"{len(result.gone)} replaced by another file moved onto them: their photos are gone, so "
            "their original times are kept apart and given to no other photo (`imgrank restore "
            f"--forget-missing` drops them): {', '.join(result.gone[:10])}",
        )
    if result.missing:
        shown = result.missing[:10]
        more = f" (and {len(result.missing) - 10} more)" if len(result.missing) > 10 else ""
        say(
            ctx,
            f"{len(result.missing)} not found under the roots: their original times are kept for when "
            f"they come back (`imgrank restore --forget-missing` drops them): {', '.join(shown)}{more}",
        )
    _report_failures(ctx, result.failed + xmp.failed)
