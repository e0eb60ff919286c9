"""What every command shares: the --json and paths options, printing, the one error handler, the
store opened lazily (so `--help` and `train --data` load no database layer)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys

import click

from imgrank.config import db_path
from imgrank.errors import ImgrankError, NothingYet, describe, disk_full
from imgrank.words import printable

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON (every field), for scripts."
)


def paths_options(fn):
    """`--paths` (one path a line) and `-0` (NUL-separated paths), for pipes: `top`, `labels`."""
    fn = click.option("-0", "nul", is_flag=True, help="Only the paths, NUL-separated (for xargs -0).")(fn)
    return click.option("--paths", "paths_only", is_flag=True, help="Only the paths, one a line.")(fn)


def print_paths(paths: list[str], nul: bool) -> None:
    """Paths to stdout as the bytes of their names (a name that is not UTF-8 stays as on disk)."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(b"".join(os.fsencode(p) + (b"\0" if nul else b"\n") for p in paths))
    out.flush()


def xmp_options(fn):
    """--xmp and --xmp-style, for `order` and `watch` (see imgrank/sidecars.py)."""
    fn = click.option(
        "--xmp-style",
        type=click.Choice(["darktable", "digikam", "lightroom"]),
        default="darktable",
        show_default=True,
        help="Whose sidecars: darktable and digiKam read IMG_1.CR2.xmp, Lightroom IMG_1.xmp.",
    )(fn)
    return click.option(
        "--xmp",
        is_flag=True,
        help="Also write the order as XMP ratings (1-5, 5 = most wanted; --top N rejected) in sidecars; "
        "`imgrank restore` puts them back.",
    )(fn)


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
        click.echo("\n".join(map(printable, message.split("\n"))), err=True)  # no terminal escapes


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped (a photo's name is in many of the daemon's)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(map(printable, super().format(record).split("\n")))


def handles_errors(fn):
    """Turn our domain errors into one clear line (exit 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NothingYet as e:  # nothing to do is not a failure: exit 0 (docs/exit-codes.md)
            say(None, str(e))
            return None
        except ImgrankError as e:
            raise click.ClickException(printable(str(e))) from None
        except sqlite3.DatabaseError as e:  # damaged under us, or locked past the busy timeout
            from imgrank.store.db import damaged  # lazy: sqlite_utils

            if disk_full(e):
                raise click.ClickException(f"database {db_path()}: {describe(e)}") from None
            raise click.ClickException(damaged(db_path(), e)) from None
        except Exception as e:  # a full disk under any library (safetensors, Parquet, Pillow)
            if disk_full(e):
                raise click.ClickException(describe(e)) from None
            raise

    return wrapper


def open_db(fresh: bool = False):
    from imgrank.store.db import open_db as _open  # lazy: sqlite_utils

    return _open(fresh=fresh)


def source_line(source: str | None) -> str:
    """Where the order comes from, in words (status, top)."""
    if source == "prior":
        return "order: from the cold-start prior (no head trained yet; label photos and `imgrank train`)"
    return "order: from the trained head" if source == "head" else "order: nothing scored yet"


def has_sklearn() -> bool:
    """Whether scikit-learn (the `train` extra) is installed, found without importing it."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None
