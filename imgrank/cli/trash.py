"""`imgrank trash`: move photos to the desktop Trash, or put the last batch back (imgrank/trash.py).
Registered by cli/__init__.py."""

from __future__ import annotations

import click

from imgrank.cli.common import emit, handles_errors, json_option, open_db, say


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--top", "top_n", type=click.IntRange(min=1), help="The N least-wanted (as `top`).")
@click.option(
    "--labelled", type=click.Choice(["delete", "keep"]), help="Every present photo with this label."
)
@click.option("--dry-run", is_flag=True, help="Print which photos would go; move nothing.")
@click.option("--undo", is_flag=True, help="Put the photos of the last `imgrank trash` back where they were.")
@json_option
@click.pass_context
@handles_errors
def trash(ctx, paths, top_n, labelled, dry_run, undo, as_json):
    """Move photos to your desktop Trash (never deleted: restore them from the Trash, or with --undo).

    Each move is logged in imgrank's store. A photo without a label gets `delete`; labels stay
    when you undo.

    \b
    Example:
        imgrank trash --labelled delete --dry-run
        imgrank trash --top 50
        imgrank top -n 50 --paths -0 | xargs -0 imgrank trash    # the same, through a pipe
        imgrank trash --undo
    """
    from imgrank import trash as core  # lazy: sqlite_utils

    db = open_db()
    if undo:
        if paths or top_n or labelled or dry_run:
            raise click.UsageError("--undo takes no photos and no --dry-run")
        result = core.undo(db)
        text = f"put back {len(result.moved)} photos of batch {result.batch}"
    else:
        try:
            chosen = core.chosen(db, top_n, labelled, paths)
        except core.ImgrankError as e:
            raise click.UsageError(str(e)) from None
        result = core.move(db, chosen, dry_run=dry_run)
        text = "\n".join(result.moved) if dry_run else core.summary(result)
        if dry_run:
            say(ctx, core.summary(result))
    for line in core.failures(result):
        say(ctx, line)
    emit({"batch": result.batch, "moved": result.moved, "failed": result.failed}, as_json, text)
    if result.failed:
        ctx.exit(1)
