"""`imgrank review`, `report`, `reviewed`: the review page and the report (review/, report.py)."""

from __future__ import annotations

import sys

import click

from imgrank.cli.common import (
    emit,
    handles_errors,
    json_option,
    open_db,
)
from imgrank.cli_text import (
    reviewed_summary,
)


@click.command()
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1 (0: any free one).",
)
@click.option("--no-open", is_flag=True, help="Print the address only; do not open a browser.")
@handles_errors
def review(port, no_open):
    """Teach imgrank by looking: a local page with queues, thumbnails, keyboard labels and metrics.

    Bound to 127.0.0.1 only. It prints a login address that works once, and opens your browser
    through a file only you can read (named on stderr; open it again to log in again); nothing is
    served without the session cookie they set. `k` keep, `d` delete, `u` undo, arrows move, space
    shows the photo large. Labels go into the same history as `relabel` (source `reviewed`). Photos
    are never deleted or moved: "delete" is a label, you delete in your own viewer. Ctrl-C stops it.

    \b
    Example:
        imgrank review
        imgrank review --no-open --port 8765
    """
    import webbrowser

    from imgrank.review.server import serve  # lazy: starlette

    open_db()  # migrate before serving

    def ready(url, redirect):
        click.echo(url)
        sys.stdout.flush()
        click.echo(f"that address works once; {redirect.as_uri()} (yours alone) logs in again", err=True)
        if not no_open:
            webbrowser.open(redirect.as_uri())  # a command line anyone can read (ps) holds no secret

    serve(port=port, on_ready=ready)


@click.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@handles_errors
def report(out):
    """Write the review page's metrics and the first 50 of each queue as one self-contained HTML file.

    \b
    Example:
        imgrank report --out report.html
    """
    from imgrank.report import write_report  # lazy: sqlite_utils

    result = write_report(open_db(), out)
    click.echo(f"report written to {result['path']} ({result['bytes'] / 1e6:.1f} MB)")


@click.command()
@click.option(
    "--top", "top_n", required=True, type=click.IntRange(min=1), help="How many of the order you looked at."
)
@json_option
@handles_errors
def reviewed(top_n, as_json):
    """You went through the first N of the order in your viewer and deleted what you wanted: the
    survivors among them get a `keep` label (source `reviewed`). Labelled photos keep their label.

    Run it before the daemon or a scan notices the deletions is fine: deleted files are not there
    to be kept. Then `imgrank train` (or let the daemon retrain).

    \b
    Example:
        imgrank order && feh ...      # look at the top 100, delete some
        imgrank reviewed --top 100
    """
    from imgrank.review.queues import keep_survivors  # lazy: sqlite_utils

    result = keep_survivors(open_db(), top_n)
    emit(
        result,
        as_json,
        reviewed_summary(result),
    )
