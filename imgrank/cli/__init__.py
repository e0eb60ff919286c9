"""The `imgrank` command: parse options, call the core, print. Nothing else.

One module per command group (scan, learn, rank, review, order, watch, trash); what they share
(options, printing, errors) is in common.py. The entry point stays `imgrank.cli:cli`."""

from __future__ import annotations

import os

import click

from imgrank import __version__
from imgrank.cli import learn as _learn
from imgrank.cli import order as _order
from imgrank.cli import rank as _rank
from imgrank.cli import review as _review
from imgrank.cli import scan as _scan
from imgrank.cli import watch as _watch
from imgrank.cli.common import PrintableFormatter
from imgrank.cli.scan import format_daemon_status
from imgrank.cli.trash import trash

__all__ = ["PrintableFormatter", "cli", "format_daemon_status"]


class WorkflowGroup(click.Group):
    """`imgrank --help` lists the commands in the order one uses them, not alphabetically."""

    ORDER = (
        "scan", "status", "roots", "relabel", "labels", "review", "train", "top", "suspects", "dupes",
        "order", "reviewed", "restore", "trash", "watch", "service", "score", "model", "export",
        "export-vectors", "import-vectors", "report",
    )  # fmt: skip

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(self.ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: (rank.get(name, len(rank)), name))


@click.group(cls=WorkflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgrank")
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="IMGRANK_HOME",
    help="Where imgrank keeps its database and heads (default: your per-user app directory).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress or messages on stderr.")
@click.pass_context
def cli(ctx: click.Context, home: str | None, quiet: bool) -> None:
    """Learn which of your photos you would delete, and show those first in any viewer.

    \b
    Example:
        imgrank scan ~/Pictures
        imgrank relabel delete ~/Pictures/bad
        imgrank train && imgrank order
    """
    if home is not None and not home.strip():
        raise click.BadParameter(
            "is empty: give a folder, or leave --home out for the default", param_hint="--home"
        )
    if home:
        os.environ["IMGRANK_HOME"] = os.path.abspath(home)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


for _command in (
    _scan.scan,
    _scan.status,
    _scan.roots,
    _learn.relabel,
    _learn.labels,
    _learn.train,
    _learn.model,
    _learn.score,
    _rank.top,
    _rank.dupes,
    _rank.suspects,
    _rank.export,
    _rank.export_vectors,
    _rank.import_vectors,
    _review.review,
    _review.report,
    _review.reviewed,
    _order.order,
    _order.restore,
    _watch.watch,
    _watch.service,
    trash,
):
    cli.add_command(_command)
