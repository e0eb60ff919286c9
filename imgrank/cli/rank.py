"""`imgrank top`, `dupes`, `suspects`, `export`, `export-vectors`, `import-vectors`: the ranking,
and what leaves the store."""

from __future__ import annotations

import click

from imgrank.cli.common import (
    emit,
    handles_errors,
    has_sklearn,
    json_option,
    open_db,
    paths_options,
    print_paths,
    say,
    source_line,
)
from imgrank.cli_text import keeper_summary
from imgrank.files import shown_path
from imgrank.words import plural


@click.command()
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
    from imgrank.ranking import ranked  # lazy: sqlite_utils
    from imgrank.store.scores import score_source  # lazy: sqlite_utils

    db = open_db()
    found = ranked(db, None if unlabelled else limit)
    rows = [r._asdict() for r in found if not (unlabelled and r.label)][:limit]
    if paths_only or nul:
        print_paths([r["path"] for r in rows], nul)
        return

    if rows and score_source(db) == "prior":
        say(None, source_line("prior"))
    rows = [{"rank": i, **r} for i, r in enumerate(rows, 1)]
    marks = ["[" + r["label"] + "]" if r["label"] else "" for r in rows]
    lines = [f"{'rank':>5}  {'score':>5}  {'label':<8}  path"]
    for r, mark in zip(rows, marks, strict=True):
        lines.append(f"{r['rank']:>5}  {r['score']:.3f}  {mark:<8}  {shown_path(r['path'])}")
    empty = "every scored photo has a label" if found else "no scores yet: run `imgrank train`"
    emit(rows, as_json, "\n".join(lines) if rows else empty)


def _dupe_mark(photo: dict) -> str:
    return "keep " if photo["keeper"] else "copy " if photo["copy"] else "     "


@click.command()
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
    from imgrank import dupes as grouping  # lazy: numpy
    from imgrank.ranking import dupe_listing  # lazy: sqlite_utils

    db = open_db()
    summary = grouping.regroup(db, threshold=threshold)
    learned = grouping.learn_keeper(db) if has_sklearn() else None  # else the one `train` stored
    groups = dupe_listing(db)
    lines = []
    for i, g in enumerate(groups, 1):
        lines.append(f"group {i} ({g['kind']}, {len(g['photos'])} photos)")
        lines += [f"  {_dupe_mark(p)} {p['score']:.3f}  {shown_path(p['path'])}" for p in g["photos"]]
    lines.append(
        f"{plural(len(groups), 'group')} among {plural(summary['photos'], 'photo')} "
        f"(similarity >= {summary['threshold']}, {summary['seconds']:.1f} s)"
    )
    if learned is not None:
        lines.append(keeper_summary(learned))
    emit(groups, as_json, "\n".join(lines))


@click.command()
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
    from imgrank.runs import suspects as find  # lazy: sqlite_utils

    rows = find(open_db(), limit)
    lines = [f"{r['p_label']:<8.3f}  {r['label']:<6}  {shown_path(r['path'] or r['sha256'])}" for r in rows]
    header = f"{'P(label)':<8}  {'label':<6}  path"
    empty = "no labelled photos with held-out predictions"
    emit(rows, as_json, "\n".join([header, *lines]) if rows else empty)
    if rows and not as_json:
        say(None, "P(label): how likely the label is to models that never saw the photo or its near copies")


@click.command()
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
    from imgrank.export import export_parquet  # lazy: numpy

    result = export_parquet(open_db(), file)

    emit(result, as_json, f"{plural(result['rows'], 'labelled photo')} written to {result['path']}")


@click.command("export-vectors")
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


@click.command("import-vectors")
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
