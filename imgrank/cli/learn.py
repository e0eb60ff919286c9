"""`imgrank relabel`, `labels`, `train`, `model`, `score`: labels and heads (relabel.py, train.py,
runs.py)."""

from __future__ import annotations

import os
import sys

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
)
from imgrank.cli_text import (
    format_report,
    keeper_summary,
    relabel_summary,
    scored_summary,
)
from imgrank.devices import resolve_device
from imgrank.files import shown_path
from imgrank.store.labels import current_labels, history, label_counts


@click.command()
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


@click.command()
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

    db = open_db()
    if paths_only or nul:
        from imgrank.index import present_files  # lazy: sqlite_utils

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
    from imgrank.train import TrainConfig  # lazy: numpy

    hidden = options.pop("hidden")
    if hidden is not None:
        options["hidden"] = tuple(int(h) for h in hidden.split(",") if h.strip())
    return TrainConfig(**{k: v for k, v in options.items() if v is not None})


@click.command()
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
    from imgrank.learn.logistic import require_sklearn  # lazy: numpy
    from imgrank.learn.mlp import require_torch  # lazy: numpy
    from imgrank.train import train_file  # lazy: numpy

    require_torch()  # one clear line before any work when the `train` extra is missing
    require_sklearn()
    if options.get("device"):
        options["device"] = resolve_device(options["device"])
    cfg = _train_config(**options)
    log = (lambda m: say(ctx, m)) if not as_json else (lambda m: None)
    if data:
        run = train_file(data, out or "head.safetensors", cfg, log)
        emit(run, as_json, format_report(run) + f"\n\nhead written to {run['head_path']}")
        return

    from imgrank.dupes import learn_keeper  # lazy: numpy
    from imgrank.train import train as do_train  # lazy: numpy

    db = open_db()
    run = do_train(db, cfg, log)

    run["keeper"] = learn_keeper(db) if has_sklearn() else None  # the burst keeper, from the same labels
    scored = f"; {scored_summary(run['scored'])}" if run["activated"] else ""
    keeper = f"\n{keeper_summary(run['keeper'])}" if run["keeper"] else ""
    emit(run, as_json, format_report(run) + f"\n\n{run['note']}{scored}{keeper}")


@click.group()
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
    With the `train` extra, the burst keeper is learned here from the same labels, as `train` does.

    \b
    Example:
        imgrank model import head.safetensors
    """
    from imgrank.runs import import_head  # lazy: sqlite_utils

    db = open_db()
    run = import_head(db, head, force=force)
    if run["duplicate"]:
        click.echo(run["note"])
        return
    if run["activated"]:
        click.echo(f"imported as run {run['id']}, now active; {scored_summary(run['scored'])}")
    else:
        click.echo(f"imported as {run['note']}")
    if has_sklearn():  # the keeper needs no head: the labels in this store teach it
        from imgrank.dupes import learn_keeper  # lazy: numpy

        click.echo(keeper_summary(learn_keeper(db)))


@click.command()
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
    from imgrank.embed import load_embedder  # lazy: numpy
    from imgrank.runs import score_all  # lazy: sqlite_utils

    db = open_db()
    embedder = None
    if model:
        embedder = load_embedder(model)
    n = score_all(db, embedder=embedder)
    emit({"scored": n}, as_json, scored_summary(n))
