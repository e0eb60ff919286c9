"""The `imgrank` command: parse options, call the core, print. Nothing else."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
from dataclasses import asdict

import click

from imgrank import __version__
from imgrank import dupes as grouping
from imgrank import service as svc
from imgrank.cli_text import (
    format_report,
    keeper_summary,
    order_summary,
    relabel_summary,
    restore_summary,
    reviewed_summary,
    scored_summary,
)
from imgrank.daemon.heartbeat import StoreGone, daemon_status
from imgrank.dupes import learn_keeper, refresh
from imgrank.embed import load_embedder
from imgrank.errors import ImgrankError, ModelError, NothingYet, Unfinished, describe, disk_full
from imgrank.export import export_parquet
from imgrank.logistic import require_sklearn
from imgrank.mlp import require_torch
from imgrank.report import write_report
from imgrank.review.queues import keep_survivors
from imgrank.review.thumbs import THUMBS_CAP, cache_size
from imgrank.train import TrainConfig
from imgrank.train import train as do_train
from imgrank.words import counts, plural, printable, scan_summary

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
            from imgrank.config import db_path
            from imgrank.store.db import damaged  # lazy: sqlite_utils

            if disk_full(e):
                raise click.ClickException(f"database {db_path()}: {describe(e)}") from None
            raise click.ClickException(damaged(db_path(), e)) from None
        except Exception as e:  # a full disk under any library (safetensors, Parquet, Pillow)
            if disk_full(e):
                raise click.ClickException(describe(e)) from None
            raise

    return wrapper


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


def open_db(fresh: bool = False):
    from imgrank.store.db import open_db as _open  # lazy: sqlite_utils

    return _open(fresh=fresh)


# --- commands: scan, status (index.py) ---


@cli.command()
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
        from imgrank.first_order import FirstOrder
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
    from imgrank.files import HEIF_HINT  # lazy: rawpy
    from imgrank.index import count_with_reason  # lazy: sqlite_utils

    n = count_with_reason(db, HEIF_HINT)
    return f"{n} HEIC/HEIF files: {HEIF_HINT}" if n else None


def _raw_hint(db):
    from imgrank.index import count_with_reason  # lazy: sqlite_utils
    from imgrank.raw import RAW_HINT  # lazy: rawpy

    n = count_with_reason(db, RAW_HINT)
    return f"{n} RAW files: {RAW_HINT}" if n else None


@cli.command()
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
        from imgrank.cli_text import unreadable_text
        from imgrank.files import shown_path  # lazy: rawpy

        rows = index.unreadable(db)
        emit(rows, as_json, unreadable_text(rows, shown_path))
        return
    from imgrank import pairs, sidecars  # lazy: sqlite_utils
    from imgrank.files import shown_path  # lazy: rawpy

    info = index.status(db)
    info["pairs"] = pairs.count(p for p, _ in index.present_files(db))
    info["xmp_sidecars"] = sidecars.count(db)
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
    from imgrank.runs import score_source  # lazy: sqlite_utils

    info["order_source"] = score_source(db)
    lines.append(_source_line(info["order_source"]))
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
    return f"unreadable: {n}{split} (see --unreadable)"


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


@cli.group()
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
    from imgrank.files import shown_path  # lazy: rawpy

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
    from imgrank.files import shown_path  # lazy: rawpy

    removed = index.remove_root(open_db(), path)
    say(ctx, f"removed root {shown_path(removed)}")


# --- commands: relabel, labels, train, model, score, top, suspects (labels.py, train.py, model.py) ---


@cli.command()
@click.argument("label", type=click.Choice(["keep", "delete", "clear"]))
@click.argument("paths", nargs=-1, required=True)
@json_option
@click.pass_context
@handles_errors
def relabel(ctx, label, paths, as_json):
    """Label photos keep or delete, or clear their label. PATH: a file, a folder, or - (stdin).

    Paths not indexed yet are indexed and embedded first, so existing "keep" and "delete"
    folders anywhere on disk can seed the labels.

    \b
    Example:
        imgrank relabel delete ~/Pictures/blurry ~/Pictures/IMG_0042.jpg
        find ~/Pictures -name '*screenshot*' | imgrank relabel delete -
    """
    from imgrank.files import shown_path  # lazy: rawpy
    from imgrank.relabel import relabel as do_relabel  # lazy: sqlite_utils

    expanded = []
    for p in paths:
        if p == "-":  # names are bytes: read them as bytes, with CRLF or LF endings
            lines = sys.stdin.buffer.read().splitlines()
            expanded += [os.fsdecode(line.rstrip(b"\r")) for line in lines if line.strip()]
        else:
            expanded.append(p)
    result = do_relabel(
        open_db(),
        None if label == "clear" else label,
        expanded,
        on_wait=lambda: say(ctx, "waiting for the other scan to finish..."),
    )
    for path, reason in result.failed:
        say(ctx, f"error: {shown_path(path)}: {reason}")

    summary = relabel_summary(len(result.applied), result.changed, result.indexed, len(result.failed))
    emit(result.as_dict(), as_json, f"{label}: {summary}")
    if result.failed:
        ctx.exit(1)


@cli.command()
@click.option(
    "-n", "limit", default=10, show_default=True, type=click.IntRange(1), help="How many changes to show."
)
@click.option(
    "--label",
    "only",
    type=click.Choice(["delete", "keep"]),
    help="With --paths or -0: only photos with this label.",
)
@paths_options
@json_option
@handles_errors
def labels(limit, only, paths_only, nul, as_json):
    """Show label counts by label and source, and the most recent changes; or, with --paths or -0,
    the paths of the labelled photos present now.

    \b
    Example:
        imgrank labels -n 20
        imgrank labels --paths --label delete
    """
    import datetime

    from imgrank.files import shown_path  # lazy: rawpy
    from imgrank.store.labels import history, label_counts  # lazy: rawpy

    db = open_db()
    if paths_only or nul:
        from imgrank.index import present_files  # lazy: sqlite_utils
        from imgrank.store.labels import current_labels  # lazy: rawpy

        current = current_labels(db)
        wanted = {only} if only else {"delete", "keep"}
        print_paths(sorted(p for p, sha in present_files(db) if current.get(sha) in wanted), nul)
        return
    counts, recent = label_counts(db), history(db, limit)
    lines = [f"{counts['by_label']['delete']} delete, {counts['by_label']['keep']} keep"]
    for source, by in sorted(counts["by_source"].items()):
        lines.append(f"  {source:<9} {by.get('delete', 0):>6} delete {by.get('keep', 0):>6} keep")
    if recent:
        lines.append("recent:")
    for h in recent:
        when = datetime.datetime.fromtimestamp(h["at"]).strftime("%Y-%m-%d %H:%M")
        where = shown_path(h["path"]) if h["path"] else h["sha256"]
        lines.append(f"  {when}  {h['label'] or 'cleared':<7} {h['source']:<8} {where}")
    emit({"counts": counts, "recent": recent}, as_json, "\n".join(lines))


def _train_config(**options):

    hidden = options.pop("hidden")
    if hidden is not None:
        options["hidden"] = tuple(int(h) for h in hidden.split(",") if h.strip())
    return TrainConfig(**{k: v for k, v in options.items() if v is not None})


@cli.command()
@click.option(
    "--cv", type=click.IntRange(2, 20), help="Cross-validation folds that choose the recipe (default 5)."
)
@click.option("--force", is_flag=True, default=None, help="Activate the new head even if it looks worse.")
@click.option("--seed", type=int, help="Random seed (same seed, same data: same metrics).")
@click.option("--epochs", "max_epochs", type=int, help="Most epochs (early stopping usually ends sooner).")
@click.option("--hidden", help="Hidden layer widths, comma separated, e.g. 256 or 512,128; '' for logistic.")
@click.option("--lr", type=float, help="AdamW learning rate.")
@click.option("--batch-size", type=int, help="Minibatch size.")
@click.option("--device", help="torch device: cpu, cuda, cuda:1, or auto (cuda where there is one).")
@click.option(
    "--no-prior", "use_prior", flag_value=False, default=None, help="Do not offer the prior's features."
)
@click.option(
    "--data", type=click.Path(exists=True, dir_okay=False), help="Train from an `imgrank export` file alone."
)
@click.option("--out", "out", type=click.Path(dir_okay=False), help="With --data: where to write the head.")
@json_option
@click.pass_context
@handles_errors
def train(ctx, data, out, as_json, **options):
    """Train the deletion head on your labels, record the run, activate it, and score every photo.

    Cross-validation over near-duplicate groups measures an L2 logistic regression (and, from 2,000
    labels, the MLP) on photos they did not see; the head is then refit on all labels. The same
    folds, run again with the prior's features, decide whether the head takes those. The report
    opens with a verdict in plain words (see docs/learning.md).

    \b
    Example:
        imgrank train
        imgrank train --data labels.parquet --device cuda --out head.safetensors   # on a GPU box
    """

    require_torch()  # one clear line before any work when the `train` extra is missing
    require_sklearn()
    if options.get("device"):
        from imgrank.devices import resolve_device

        options["device"] = resolve_device(options["device"])
    cfg = _train_config(**options)
    log = (lambda m: say(ctx, m)) if not as_json else (lambda m: None)
    if data:
        from imgrank.train import train_file

        run = train_file(data, out or "head.safetensors", cfg, log)
        emit(run, as_json, format_report(run) + f"\n\nhead written to {run['head_path']}")
        return

    db = open_db()
    run = do_train(db, cfg, log)

    run["keeper"] = learn_keeper(db) if _has_sklearn() else None  # the burst keeper, from the same labels
    scored = f"; {scored_summary(run['scored'])}" if run["activated"] else ""
    keeper = f"\n{keeper_summary(run['keeper'])}" if run["keeper"] else ""
    emit(run, as_json, format_report(run) + f"\n\n{run['note']}{scored}{keeper}")


@cli.group()
def model():
    """List, choose and import trained heads.

    \b
    Example:
        imgrank model list
        imgrank model use 3
    """


@model.command("list")
@json_option
@handles_errors
def model_list(as_json):
    """List training runs and their heads, newest first (* = active; prior: takes the prior's features).

    \b
    Example:
        imgrank model list --json
    """
    import datetime

    from imgrank.runs import list_runs  # lazy: sqlite_utils

    runs = list_runs(open_db())

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [f"   {'id':>4}  {'when':<16} {'delete':>6} {'keep':>6} {'val AP':>7} {'AUC':>6}  prior  model"]
    for r in runs:
        when = datetime.datetime.fromtimestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M")
        c = r["counts"]
        lines.append(
            f" {'*' if r['active'] else ' '} {r['id']:>4}  {when:<16}"
            f" {c.get('delete', '-'):>6} {c.get('keep', '-'):>6}"
            f" {f(r['val_ap']):>7} {f(r['val_auc']):>6}"
            f"  {'yes' if r['prior_features'] else 'no':<5}  {r['embed_model']}"
        )
    emit(runs, as_json, "\n".join(lines) if runs else "no runs yet: label photos and run `imgrank train`")


@model.command("use")
@click.argument("run_id", type=click.IntRange(1, 2**63 - 1))
@handles_errors
def model_use(run_id):
    """Make run ID's head the active one and rescore.

    \b
    Example:
        imgrank model use 3
    """
    from imgrank.runs import score_all, use_run  # lazy: sqlite_utils

    db = open_db()
    use_run(db, run_id)
    click.echo(f"run {run_id} is now the active head; {scored_summary(score_all(db))}")


@model.command("import")
@click.argument("head", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Activate it even if its metrics look worse.")
@handles_errors
def model_import(head, force):
    """Import a head trained elsewhere (`train --data`), check it fits the local model, activate it.

    \b
    Example:
        imgrank model import head.safetensors
    """
    from imgrank.runs import import_head  # lazy: sqlite_utils

    run = import_head(open_db(), head, force=force)
    if run["duplicate"]:
        click.echo(run["note"])
    elif run["activated"]:
        click.echo(f"imported as run {run['id']}, now active; {scored_summary(run['scored'])}")
    else:
        click.echo(f"imported as {run['note']}")


def _source_line(source: str | None) -> str:
    """Where the order comes from, in words (status, top)."""
    if source == "prior":
        return "order: from the cold-start prior (no head trained yet; label photos and `imgrank train`)"
    return "order: from the trained head" if source == "head" else "order: nothing scored yet"


@cli.command()
@click.option(
    "--model",
    envvar="IMGRANK_MODEL",
    help="Embedding model for the prior's prompts (default: the one the store's scan loaded).",
)
@json_option
@handles_errors
def score(model, as_json):
    """Score every embedded photo with the active head (numpy only); with no head yet, with the prior.

    The prior guesses from prompts (see prompts.txt in the package, or in your imgrank home) and
    from blur, exposure and resolution measured while scanning.

    \b
    Example:
        imgrank score
    """
    from imgrank.runs import score_all  # lazy: sqlite_utils

    db = open_db()
    embedder = None
    if model:
        from imgrank.embed import load_embedder

        embedder = load_embedder(model)
    n = score_all(db, embedder=embedder)
    emit({"scored": n}, as_json, scored_summary(n))


@cli.command()
@click.option("-n", "limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many.")
@click.option("--unlabelled", is_flag=True, help="Only photos without a label (you judged the others).")
@paths_options
@json_option
@handles_errors
def top(limit, unlabelled, paths_only, nul, as_json):
    """The least-wanted photos: highest deletion score (calibrated P(delete)) first; [keep]/[delete]
    marks labelled ones.

    \b
    Example:
        imgrank top -n 50 --unlabelled
        imgrank top -n 50 --paths -0 | xargs -0 ls -l
    """
    from imgrank.files import shown_path  # lazy: rawpy
    from imgrank.ranking import ranked  # lazy: sqlite_utils

    db = open_db()
    found = ranked(db, None if unlabelled else limit)
    rows = [r._asdict() for r in found if not (unlabelled and r.label)][:limit]
    if paths_only or nul:
        print_paths([r["path"] for r in rows], nul)
        return
    from imgrank.runs import score_source  # lazy: sqlite_utils

    if rows and score_source(db) == "prior":
        say(None, _source_line("prior"))
    rows = [{"rank": i, **r} for i, r in enumerate(rows, 1)]
    marks = ["[" + r["label"] + "]" if r["label"] else "" for r in rows]
    lines = [f"{'rank':>5}  {'score':>5}  {'label':<8}  path"]
    for r, mark in zip(rows, marks, strict=True):
        lines.append(f"{r['rank']:>5}  {r['score']:.3f}  {mark:<8}  {shown_path(r['path'])}")
    empty = "every scored photo has a label" if found else "no scores yet: run `imgrank train`"
    emit(rows, as_json, "\n".join(lines) if rows else empty)


def _dupe_mark(photo: dict) -> str:
    return "keep " if photo["keeper"] else "copy " if photo["copy"] else "     "


@cli.command()
@click.option(
    "--threshold",
    type=float,
    help="Cosine similarity of image vectors at or above which two photos are near-duplicates "
    "[the last one given, at first 0.95]; the daemon and `scan` keep groups current with it.",
)
@json_option
@handles_errors
def dupes(threshold, as_json):
    """Group near-duplicates (bursts) and exact copies; the keeper of each group is marked.

    The keeper is the shot you would keep, learned from the bursts you already sorted (your keep and
    delete labels inside groups, and the shots you deleted from them), else the photo least likely
    to be deleted (by the head, else the prior); in the order the others move up, after their keeper
    (their deletion score goes halfway to 1). Nothing is deleted.

    \b
    Example:
        imgrank dupes
        imgrank dupes --threshold 0.97 --json
    """
    from imgrank.files import shown_path  # lazy: rawpy
    from imgrank.ranking import dupe_listing  # lazy: sqlite_utils

    db = open_db()
    summary = grouping.regroup(db, threshold=threshold)
    learned = grouping.learn_keeper(db) if _has_sklearn() else None  # else the one `train` stored
    groups = dupe_listing(db)
    lines = []
    for i, g in enumerate(groups, 1):
        lines.append(f"group {i} ({g['kind']}, {len(g['photos'])} photos)")
        lines += [
            f"  {_dupe_mark(p)} {p['score']:.3f}  {shown_path(p['path'])}" for p in g["photos"]
        ]
    lines.append(
        f"{plural(len(groups), 'group')} among {plural(summary['photos'], 'photo')} "
        f"(similarity >= {summary['threshold']}, {summary['seconds']:.1f} s)"
    )
    if learned is not None:
        from imgrank.cli_text import keeper_summary

        lines.append(keeper_summary(learned))
    emit(groups, as_json, "\n".join(lines))


def _has_sklearn() -> bool:
    """Whether scikit-learn (the `train` extra) is installed, found without importing it."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


@cli.command()
@click.option("-n", "limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many.")
@json_option
@handles_errors
def suspects(limit, as_json):
    """Labelled photos whose label the held-out predictions of the last `train` most disagree with:
    likely wrong labels. P(label) is how likely the label is to models that never saw the photo nor
    its near-duplicates (averaged over several fold splits, calibrated to your share of deletes).

    Fix one with `imgrank relabel keep|delete PATH`, then retrain.

    \b
    Example:
        imgrank train && imgrank suspects -n 30
    """
    from imgrank.files import shown_path  # lazy: rawpy
    from imgrank.runs import suspects as find  # lazy: sqlite_utils

    rows = find(open_db(), limit)
    lines = [f"{r['p_label']:<8.3f}  {r['label']:<6}  {shown_path(r['path'] or r['sha256'])}" for r in rows]
    header = f"{'P(label)':<8}  {'label':<6}  path"
    empty = "no labelled photos with held-out predictions"
    emit(rows, as_json, "\n".join([header, *lines]) if rows else empty)
    if rows and not as_json:
        say(None, "P(label): how likely the label is to models that never saw the photo or its near copies")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@handles_errors
def export(file, as_json):
    """Write labelled vectors, labels and the feature spec to Parquet, to train elsewhere.

    \b
    Example:
        imgrank export labels.parquet
        # on a GPU machine: imgrank train --data labels.parquet --device cuda --out head.safetensors
        # back here:       imgrank model import head.safetensors
    """

    result = export_parquet(open_db(), file)

    emit(result, as_json, f"{plural(result['rows'], 'labelled photo')} written to {result['path']}")


@cli.command("export-vectors")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@handles_errors
def export_vectors(file, as_json):
    """Write every image vector of this store (content hash -> vector, model id) to Parquet.

    Made for a backlog embedded on a GPU machine, then `imgrank import-vectors FILE` at home.

    \b
    Example:
        imgrank scan --device cuda /data/photos && imgrank export-vectors vectors.parquet
    """
    from imgrank.vectorfile import export_vectors as do_export  # lazy: sqlite_utils

    r = do_export(open_db(), file)

    vectors = plural(r["vectors"], "vector")
    emit(r, as_json, f"{vectors} of {r['model']} ({r['dim']}-d) written to {r['path']}")


@cli.command("import-vectors")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", envvar="IMGRANK_MODEL", help="Embedding model (default: the one the store has).")
@json_option
@handles_errors
def import_vectors(file, model, as_json):
    """Add image vectors made elsewhere (`export-vectors`) to this store; another model's are refused.

    `scan` then decodes and embeds no photo whose content already has a vector.

    \b
    Example:
        imgrank import-vectors vectors.parquet && imgrank scan ~/Pictures
    """
    from imgrank.vectorfile import import_vectors as do_import  # lazy: sqlite_utils

    r = do_import(open_db(), file, model)

    already = f" ({r['already']} already here)" if r["already"] else ""
    emit(r, as_json, f"{plural(r['imported'], 'vector')} of {r['model']} imported{already}")


# --- commands: review, report, reviewed (review/, report.py) ---


@cli.command()
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


@cli.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@handles_errors
def report(out):
    """Write the review page's metrics and the first 50 of each queue as one self-contained HTML file.

    \b
    Example:
        imgrank report --out report.html
    """

    result = write_report(open_db(), out)
    click.echo(f"report written to {result['path']} ({result['bytes'] / 1e6:.1f} MB)")


@cli.command()
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

    result = keep_survivors(open_db(), top_n)
    emit(
        result,
        as_json,
        reviewed_summary(result),
    )


# --- commands: order, restore (order.py) ---


def _when(ns: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _report_failures(ctx, failed: list[tuple[str, str]], exit: bool = True) -> None:
    from imgrank.files import shown_path  # lazy: rawpy

    for path, reason in failed:
        click.echo(f"{shown_path(path)}: {reason}", err=True)
    if failed and exit:
        ctx.exit(1)


@cli.command()
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
    from imgrank.files import shown_path  # lazy: rawpy
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
        from imgrank.cli_text import xmp_summary

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


@cli.command()
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


# --- commands: watch, service (daemon/, service.py) ---


@cli.command()
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


@cli.group()
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


# --- commands in their own modules ---

from imgrank.cli_trash import trash  # noqa: E402  (it uses the helpers above)

cli.add_command(trash)
