"""The run registry: which head is active, and the scores it writes.

One sequence, used by `train` and `model import` alike: record the run, save its head, activate
it unless it is worse, and score the folder with it. A head that is not activated scores nothing.
No torch here: the daemon scores with these functions. The SQL on the tables `runs`, `scores` and
`oof` is `imgrank.store.scores`'s.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from imgrank import config
from imgrank.errors import ModelError, NothingYet
from imgrank.head_inputs import compute_prior, head_input
from imgrank.learn.suspects import p_given_label, suspect_order
from imgrank.model import Head, check_compatible, load_head, save_head
from imgrank.store import scores as store
from imgrank.store.labels import current_labels
from imgrank.store.rows import paths_of_contents, present_contents
from imgrank.store.vectors import current_model_id
from imgrank.store.vectors import store_dims as _store_dims

WORSE_MARGIN = 0.02  # a head whose held-out AP is this much below the comparison is "clearly worse"

# --- runs ---


def headline(metrics: dict) -> dict:
    """The held-out metrics of the recipe that became the head (older runs: the MLP's)."""
    return metrics.get("active") or metrics.get("mlp") or {}


def list_runs(db) -> list[dict]:
    """Every run, newest first, with its headline held-out metrics."""
    out = []
    for run in store.all_runs(db):
        metrics = json.loads(run["metrics"] or "{}")
        out.append(
            {
                "id": run["id"],
                "started_at": run["started_at"],
                "seconds": round((run["finished_at"] or run["started_at"]) - run["started_at"], 2),
                "counts": json.loads(run["counts"] or "{}"),
                "recipe": headline(metrics).get("recipe"),
                "val_ap": headline(metrics).get("ap"),
                "val_auc": headline(metrics).get("roc_auc"),
                "prior_features": bool((metrics.get("prior_features") or {}).get("used")),
                "head_path": run["head_path"],
                "embed_model": run["embed_model"],
                "active": bool(run["active"]),
            }
        )
    return out


def head_digest(weights: dict[str, np.ndarray]) -> str:
    """A fingerprint of a head's weights: the same head imported twice is recognised."""
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode() + b"\0" + np.ascontiguousarray(weights[k], "<f4").tobytes())
    return h.hexdigest()


def verdict(
    meta: dict, previous: dict | None, force: bool = False, margin: float = WORSE_MARGIN
) -> str | None:
    """Why a head must not be activated (one line), or None when it may be."""
    if force:
        return None
    metrics = meta.get("metrics") or {}
    m, base = headline(metrics), metrics.get("baseline") or {}
    auc, ap = m.get("roc_auc"), m.get("ap")
    if auc is not None and auc < 0.5:
        return f"its held-out ROC AUC {auc:.3f} is below chance (0.5)"
    if ap is not None and base.get("ap") is not None and ap < base["ap"] - margin:
        return f"its held-out AP {ap:.3f} is clearly below the logistic baseline's {base['ap']:.3f}"
    if previous is not None and ap is not None:
        old = headline(json.loads(previous["metrics"] or "{}")).get("ap")
        if old is not None and ap < old - margin:
            return f"its held-out AP {ap:.3f} is clearly below the active run {previous['id']}'s {old:.3f}"
    return None


def record_and_activate(
    db,
    weights: dict[str, np.ndarray],
    meta: dict,
    started: float | None = None,
    oof: tuple[list[str], np.ndarray] | None = None,
    imported_from: str | None = None,
    force: bool = False,
    margin: float = WORSE_MARGIN,
) -> dict:
    """Record a run, save its head, activate it unless it is worse, and score with it if activated.

    `margin` is the owner's own setting (`TrainConfig.worse_margin` of a local `train`), never one a
    head carries: an imported head's config is the host's. An imported head already recorded (same
    weights) adds no second run. Returns {"id", "activated", "note", "scored", "head_path", "duplicate"}."""
    digest = head_digest(weights)
    existing = store.run_with_digest(db, digest) if imported_from else None
    if existing is not None:
        return {
            "id": existing,
            "activated": False,
            "duplicate": True,
            "scored": 0,
            "head_path": None,
            "note": f"this head is already run {existing} (`imgrank model use {existing}` activates it)",
        }
    now = time.time()
    run_config = {**(meta.get("config") or {}), "head_digest": digest}
    if imported_from:
        run_config["imported_from"] = imported_from
    previous = store.active_run(db)
    reason = verdict(meta, previous, force, margin)
    with db.atomic():
        run_id = store.add_run(
            db,
            started or now,
            now,
            run_config,
            meta.get("counts") or {},
            meta.get("metrics") or {},
            meta["feature_spec"]["embed_model"],
        )
        path = save_head(
            weights, {**meta, "run_id": run_id}, config.heads_dir() / f"head-{run_id}.safetensors"
        )
        store.set_head_path(db, run_id, str(path))
        if oof is not None:
            store.write_oof(db, run_id, *oof)
    out = {"id": run_id, "activated": reason is None, "duplicate": False, "scored": 0, "head_path": str(path)}
    if reason is None:
        use_run(db, run_id)
        out["scored"] = score_all(db)
        out["note"] = f"run {run_id} is now the active head"
    else:
        out["note"] = (
            f"run {run_id} NOT activated: {reason} (`imgrank model use {run_id}` or `train --force`)"
        )
    return out


def use_run(db, run_id: int) -> Head:
    """Make a run's head the active one, after checking it is sound and fits the store."""
    path = store.head_path(db, run_id)
    if not path:
        raise ModelError(f"no run {run_id} with a head (see `imgrank model list`)")
    head = load_head(path)
    model_id = current_model_id(db)
    check_compatible(head, model_id, *_store_dims(db, model_id))
    store.activate(db, run_id)
    return head


def import_head(db, path: Path | str, force: bool = False) -> dict:
    """A head trained elsewhere: checked whole and against the store BEFORE it is recorded, then
    the same sequence as `train` (record, save, activate unless worse, score)."""
    head = load_head(path)
    model_id = current_model_id(db)
    check_compatible(head, model_id, *_store_dims(db, model_id))
    return record_and_activate(
        db, head.weights, head.meta, imported_from=str(Path(path).resolve()), force=force
    )


def active_head(db, model_id: str | None = None) -> Head | None:
    """The active head, checked against the store's embedding model; None if no head is active."""
    run = store.active_run(db)
    if run is None:
        return None
    head = load_head(run["head_path"])
    head.meta["run_id"] = run["id"]
    model_id = model_id or current_model_id(db)
    check_compatible(head, model_id, *_store_dims(db, model_id))
    return head


# --- scores ---


def score_prior(db, model_id: str, shas: list[str] | None = None, embedder=None) -> int:
    """Write the prior as the photos' scores (used while no head is active); returns the count."""
    result = compute_prior(db, model_id, shas, embedder)
    store.write_scores(db, result.sha256, result.p, run_id=None, replace=shas is None)
    return len(result.sha256)


def _score(db, head: Head, shas: list[str] | None, replace: bool) -> int:
    found, x = head_input(db, head.spec, shas)
    return store.write_scores(db, found, head.predict(x), head.meta["run_id"], replace=replace)


def score_all(db, model_id: str | None = None, embedder=None) -> int:
    """Score every embedded image of the store's model with the active head, else with the cold-start
    prior (its prompts embedded by `embedder` when given); returns the count."""
    model_id = model_id or current_model_id(db)
    head = active_head(db, model_id)
    if head is None:  # cold start: the zero-shot prior orders the photos until a head exists
        return score_prior(db, model_id, embedder=embedder)
    return _score(db, head, None, replace=True)


def score_unscored(db, model_id: str | None = None) -> int:
    """Score the present photos the active head (with no head, the prior) has no score for: new,
    changed or renamed since it last scored (a rename drops a score, as the file name is a feature).
    Returns the count. Raises ModelError if the active head does not fit the store."""

    model_id = model_id or current_model_id(db)
    head = active_head(db, model_id)
    run_id = head.meta["run_id"] if head else None
    todo = sorted(present_contents(db) - store.scored_by(db, run_id))
    if not todo:
        return 0
    if head is None:
        return score_prior(db, model_id, todo)
    return _score(db, head, todo, replace=False)


# --- out-of-fold predictions ---


def suspects(db, n: int = 20) -> list[dict]:
    """Labelled photos the latest held-out predictions most disagree with (lowest P(given label) first).

    The predictions are `train`'s label check (`imgrank.learn.suspects.label_check`): calibrated P(delete)
    from models that never saw the photo nor its near-duplicates, averaged over several fold splits."""

    held_out = store.oof_of_latest_run(db)
    if held_out is None:
        raise NothingYet("no held-out predictions yet: run `imgrank train`")
    labels = current_labels(db)
    # by sha256 first: ties in suspect_order keep one order from run to run
    rows = sorted((sha, p) for sha, p in held_out if sha in labels)
    p_delete = np.array([p for _, p in rows], np.float64)
    given = np.array([labels[sha] == "delete" for sha, _ in rows], int)
    p_label = p_given_label(p_delete, given)
    picked = [(*rows[i], float(p_label[i])) for i in suspect_order(p_delete, given)[:n]]
    paths = paths_of_contents(db, [sha for sha, _, _ in picked])
    return [
        {
            "path": paths.get(sha),
            "label": labels[sha],
            "p_label": round(pl, 4),
            "p_delete": round(p, 4),
            "sha256": sha,
        }
        for sha, p, pl in picked
    ]
