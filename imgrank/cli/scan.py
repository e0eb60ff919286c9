"""`imgrank scan`, `status`, `roots`: the index (index/, store/rows.py)."""

from __future__ import annotations

import sys

import click

from imgrank import pairs
from imgrank.cli.common import (
    emit,
    handles_errors,
    json_option,
    open_db,
    say,
    source_line,
)
from imgrank.cli_text import unreadable_text
from imgrank.daemon.heartbeat import daemon_status
from imgrank.errors import ModelError
from imgrank.files import HEIF_HINT, shown_path
from imgrank.first_order import FirstOrder
from imgrank.raw import RAW_HINT
from imgrank.store import sidecars as sidecar_records
from imgrank.thumbs import THUMBS_CAP, cache_size
from imgrank.words import counts, plural, scan_summary


@click.command()
@click.argument("roots", nargs=-1)
@click.option("--model", envvar="IMGRANK_MODEL", help="Embedding model: a uform hub id or a local directory.")
@click.option("--jobs", type=click.IntRange(1), help="Decoding processes (default: all cores).")
@click.option(
    "--device",
    help="Embed images with torch on this device (cuda, auto, cpu; half precision on CUDA). "
    "Default: ONNX on the CPU, no torch needed.",
)
@click.option(
    "--retry-unreadable",
    is_flag=True,
    help="Read every unreadable file again (e.g. after installing a decoder).",
)
@click.option(
    "--order",
    "order_too",
    is_flag=True,
    help="Also order the photos: once 2,000 are embedded (while the rest go on), and at the end.",
)
@json_option
@click.pass_context
@handles_errors
def scan(ctx, roots, model, jobs, device, retry_unreadable, order_too, as_json):
    """Index photo folders: new, changed, moved and vanished files; embed what is new.

    ROOTS are remembered, so later runs need none. Nothing under a root is ever changed.

    \b
    Example:
        imgrank scan ~/Pictures /mnt/photos
        imgrank scan --json
        imgrank scan --device cuda /data/photos   # a backlog, on a GPU machine
        imgrank scan --order ~/Pictures           # a big first scan: a first order after 2,000 photos
    """
    from imgrank import index  # lazy: sqlite_utils
    from imgrank.dupes import refresh  # lazy: numpy
    from imgrank.embed import load_embedder  # lazy: numpy
    from imgrank.runs import score_unscored  # lazy: sqlite_utils

    db = open_db(fresh=True)  # the one command that may start a new store where one was
    index.add_roots(db, roots)
    all_roots = index.list_roots(db)
    if not all_roots:
        raise click.UsageError("no photo folders yet: give one, e.g. `imgrank scan ~/Pictures`")
    from imgrank.store.db import model_name  # lazy: sqlite_utils

    embedder = load_embedder(model_name(db, model), device=device)
    quiet = ctx.find_root().obj.get("quiet")
    bar = None
    first = None
    if order_too:
        from imgrank.order import order as run_order  # lazy: sqlite_utils

        def lay_out(db):  # 10 s apart, keeping places: the order at the end moves only what must
            return run_order(db, step=10.0, keep_places=True)

        first = FirstOrder(db, embedder.model_id, lay_out, tell=lambda m: say(ctx, "\n" + m))

    def on_total(total):
        nonlocal bar
        if total >= 20 and not quiet:
            bar = click.progressbar(length=total, label="Indexing", file=sys.stderr)
            bar.__enter__()

    try:
        result = index.scan(
            db,
            all_roots,
            embedder,
            jobs=jobs,
            on_total=on_total,
            progress=lambda n: bar.update(n) if bar else None,
            on_wait=lambda: say(ctx, "waiting for the other scan to finish..."),
            retry_unreadable=retry_unreadable,
            on_embedded=first,
        )
    finally:
        if bar:
            bar.__exit__(None, None, None)
    for warning in result.warnings:
        say(ctx, warning)
    for hint in (_heif_hint(db), _raw_hint(db)):
        if hint:
            say(ctx, hint)
    d = result.as_dict()
    d.pop("warnings")
    # With a trained head, what is new, changed or moved is scored at once (`order` and `top` see it).
    try:
        d["scored"] = score_unscored(db, embedder.model_id)
    except ModelError as e:
        say(ctx, f"photos not scored: {e}")
        d["scored"] = 0

    try:  # groups kept current, as the daemon does
        d["near_duplicate_groups"] = refresh(db)["groups"]
    except ModelError:
        pass  # nothing embedded yet: nothing to group
    if first is not None:
        if first.seconds is not None:
            d["first_order_seconds"] = round(first.seconds, 1)
        d["ordered"] = lay_out(db).ordered

    emit(d, as_json, scan_summary(d))


def _heif_hint(db):
    from imgrank.index import count_with_reason  # lazy: sqlite_utils

    n = count_with_reason(db, HEIF_HINT)
    return f"{n} HEIC/HEIF files: {HEIF_HINT}" if n else None


def _raw_hint(db):
    from imgrank.index import count_with_reason  # lazy: sqlite_utils

    n = count_with_reason(db, RAW_HINT)
    return f"{n} RAW files: {RAW_HINT}" if n else None


@click.command()
@click.option("--unreadable", "list_unreadable", is_flag=True, help="List unreadable files and why.")
@json_option
@handles_errors
def status(list_unreadable, as_json):
    """Show what imgrank knows: folders, images by state, model, labels, head, daemon.

    \b
    Example:
        imgrank status
        imgrank status --unreadable
    """
    from imgrank import index  # lazy: sqlite_utils

    db = open_db()
    if list_unreadable:
        rows = index.unreadable(db)
        emit(rows, as_json, unreadable_text(rows, shown_path))
        return
    info = index.status(db)
    info["pairs"] = pairs.count(p for p, _ in index.present_files(db))
    info["xmp_sidecars"] = sidecar_records.count(db)
    lines = [
        "roots: " + (", ".join(map(shown_path, info["roots"])) or "none (run `imgrank scan FOLDER`)"),
        "images: "
        + _image_counts(info["images"])
        + (f" ({info['pairs']} RAW+JPEG pairs, one photo each)" if info["pairs"] else ""),
        _embedded_line(info),
        _unreadable_line(info),
        f"embedding model: {info['embedding_model'] or '-'}",
        f"mtimes set by `order`: {info['ordered']}"
        + (" (`imgrank restore` puts them back)" if info["ordered"] else ""),
        *([f"XMP sidecars written by `order --xmp`: {info['xmp_sidecars']}"] if info["xmp_sidecars"] else []),
        f"database: {info['database']} ({info['database_bytes'] / 1e6:.1f} MB)",
    ]

    count, size = cache_size()
    info["thumbnails"] = {"count": count, "bytes": size, "cap_bytes": THUMBS_CAP}
    lines.append(
        f"thumbnails: {count} ({size / 1e6:.1f} MB of at most {THUMBS_CAP / 1e6:.0f} MB; none for photos "
        "under 48 KB)"
    )

    info["daemon"] = daemon_status(db)
    lines.append(format_daemon_status(info["daemon"]))
    from imgrank.store.scores import score_source  # lazy: sqlite_utils

    info["order_source"] = score_source(db)
    lines.append(source_line(info["order_source"]))
    emit(info, as_json, "\n".join(lines))


def _embedded_line(info: dict) -> str:
    """Embedded counts contents, present counts files: say so where exact copies make them differ."""
    copies = info["images"].get("ok", 0) - info["contents"]
    line = f"embedded: {info['embedded']}"
    if copies > 0:
        line += f" of {info['contents']} distinct photos ({copies} present files are exact copies of another)"
    return line


def _unreadable_line(info: dict) -> str:
    n, ours = info["unreadable"], info["unreadable_ours"]
    if not n:
        return "unreadable: 0"
    split = f": {n - ours} bad files, {ours} imgrank failed on (read again by the next scan)" if ours else ""
    return f"unreadable: {n}{split} (`imgrank status --unreadable` lists them)"


def _image_counts(images: dict) -> str:

    shown = counts([(images.get("ok", 0), "present"), (images.get("missing", 0), "missing")], noun=None)
    return shown or "none yet"


def format_daemon_status(info: dict) -> str:
    """One line for `imgrank status`: running or not, since when, what it did (non-zero counts)."""
    import datetime

    def when(t):
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"

    c = info["counters"]
    photos = counts([(c.get(k, 0), k) for k in ("indexed", "moved", "deleted")], verb=True)
    more = [plural(c.get(k, 0), noun) for k, noun in (("labels", "label"), ("reorders", "reorder"))]
    more.append(plural(c.get("retrains", 0), "retraining"))
    done = ", ".join([photos] * bool(photos) + [m for m in more if not m.startswith("0 ")])
    done = f"; {done}" if done else ""
    if info["running"]:
        return f"daemon: running (pid {info['pid']}) since {when(info['started_at'])}{done}"
    if info["started_at"] is None:
        return "daemon: not running (start it with `imgrank watch` or `imgrank service install --enable`)"
    return f"daemon: not running (last seen {when(info['heartbeat_at'])}){done}"


@click.group()
def roots():
    """List or remove the photo folders imgrank scans (`imgrank scan FOLDER` adds one).

    \b
    Example:
        imgrank roots list
        imgrank roots remove /mnt/old-disk/photos
    """


@roots.command("list")
@json_option
@handles_errors
def roots_list(as_json):
    """List the photo folders, one a line.

    \b
    Example:
        imgrank roots list
    """
    from imgrank import index  # lazy: sqlite_utils

    paths = [str(p) for p in index.list_roots(open_db())]
    emit(paths, as_json, "\n".join(map(shown_path, paths)))


@roots.command("remove")
@click.argument("path", type=click.Path())
@click.pass_context
@handles_errors
def roots_remove(ctx, path):
    """Stop scanning a folder: its photos leave the ranking. Their vectors and labels are kept
    (adding the folder again re-embeds nothing), and `restore` still knows any times set there.

    \b
    Example:
        imgrank roots remove /mnt/old-disk/photos
    """
    from imgrank import index  # lazy: sqlite_utils

    removed = index.remove_root(open_db(), path)
    say(ctx, f"removed root {shown_path(removed)}")
