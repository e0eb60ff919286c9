"""The `imgrank` command: parse options, call the core, print. Nothing else."""

from __future__ import annotations

import functools
import json
import os

import click

from imgrank import __version__
from imgrank.errors import ImgrankError


def emit(data, as_json: bool, text: str | None = None) -> None:
    """Data to stdout: JSON for machines, else the given text."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    elif text is not None:
        click.echo(text)


def say(ctx: click.Context | None, message: str) -> None:
    """A message to stderr, unless -q."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None or not ctx.find_root().obj.get("quiet"):
        click.echo(message, err=True)


def handles_errors(fn):
    """Turn our domain errors into one clear line (exit 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImgrankError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    if home:
        os.environ["IMGRANK_HOME"] = os.path.abspath(home)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def open_db():
    from imgrank.db import open_db as _open

    return _open()


# --- commands: scan, status (index.py) ---

# --- commands: relabel, labels, train, model, score, top, suspects (labels.py, train.py, model.py) ---

# --- commands: order, restore (order.py) ---

# --- commands: watch, service (watch.py) ---
