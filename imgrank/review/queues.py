"""The review queues: what the owner is shown to label next, and why each photo scores as it does.

- least-wanted: the deletion order itself, unlabelled photos only;
- suspects: labelled photos the scores most disagree with (out-of-fold predictions when
  `train --cv` made them, else the current scores);
- informative: unlabelled photos to label next (imgrank.learn.active: by default drawn at random, which no
  queue beat on the benchmarks; rule "badge": doubted by the head and unlike each other in its input,
  without a head representatives of the kinds);
- bursts: groups of near-duplicates and exact copies, best first.
"""

from __future__ import annotations

import numpy as np

from imgrank import runs
from imgrank.errors import ImgrankError
from imgrank.files import display_name
from imgrank.head_inputs import explain_prior, head_input
from imgrank.learn.active import choose
from imgrank.learn.head_math import standardise
from imgrank.ranking import dupe_listing, ranked, scored_photos
from imgrank.runs import active_head
from imgrank.store import owntimes
from imgrank.store.labels import current_labels, set_label
from imgrank.store.scores import active_run, score_source
from imgrank.store.vectors import current_model_id, image_vectors

QUEUES = ("least-wanted", "suspects", "informative", "bursts")


def _item(row, source: str | None, **extra) -> dict:

    return {
        "sha256": row.sha256,
        "path": display_name(row.path),
        "name": display_name(row.path).rsplit("/", 1)[-1],
        "folder": _folder(display_name(row.path)),
        "score": round(float(row.score), 4),
        "label": row.label,
        "source": source,
        "_path": row.path,  # the server's, to find the file; never sent
        **extra,
    }


def _folder(path: str) -> str:
    """The parent folder's name, shown on a tile: many photos share a name (screenshot.jpg)."""
    return path.rsplit("/", 2)[-2] if path.count("/") >= 2 else ""


def _unique(rows):
    seen, out = set(), []
    for r in rows:
        if r.sha256 not in seen:
            seen.add(r.sha256)
            out.append(r)
    return out


def least_wanted(db, n: int = 60) -> list[dict]:

    source = score_source(db)
    return [_item(r, source) for r in _unique(r for r in ranked(db) if r.label is None)[:n]]


def suspects(db, n: int = 60) -> list[dict]:
    """Labelled photos whose label the model doubts most (lowest P(given label) first)."""

    rows = {r.sha256: r for r in scored_photos(db) if r.label is not None}
    try:
        doubted = [
            (s["sha256"], s["p_label"], "out-of-fold") for s in runs.suspects(db, n) if s["sha256"] in rows
        ]
    except ImgrankError:  # no cross-validation yet: the current scores are the doubt
        p_label = {s: (r.score if r.label == "delete" else 1 - r.score) for s, r in rows.items()}
        doubted = [
            (s, p, score_source(db)) for s, p in sorted(p_label.items(), key=lambda kv: (kv[1], kv[0]))
        ]
    return [_item(rows[s], source, p_label=round(float(p), 4)) for s, p, source in doubted[:n]]


def informative(db, n: int = 60, model_id: str | None = None, rule: str | None = None) -> list[dict]:
    """Unlabelled photos to label next (imgrank.learn.active.choose). By default drawn at random (no queue
    beat that on the benchmarks); with rule="badge", uncertain photos unlike each other in what the
    head sees (the code scripts/bench_learn.py --strategy queue measures), and without a head photos
    that stand for the folder's kinds, the prior breaking ties towards the less wanted."""

    source = score_source(db)
    rows = {r.sha256: r for r in _unique(r for r in scored_photos(db) if r.label is None)}
    if not rows:
        return []
    model_id = model_id or current_model_id(db)
    labelled = set(current_labels(db))
    shas, vectors, covered = [], [], []
    for chunk_shas, chunk in image_vectors(db, model_id):
        wanted = [i for i, s in enumerate(chunk_shas) if s in rows]
        shas += [chunk_shas[i] for i in wanted]
        vectors.append(chunk[wanted])
        covered.append(chunk[[i for i, s in enumerate(chunk_shas) if s in labelled]])
    if not shas:
        return []
    scores = np.array([rows[s].score for s in shas])
    head = active_head(db, model_id) if source == "head" else None

    def view(picks: np.ndarray) -> np.ndarray:
        """The head's standardised input for these photos: the space the page is spread over."""
        _, x = head_input(db, head.spec, [shas[i] for i in picks])
        return standardise(x, head.weights["mean"], head.weights["std"])

    picks = choose(
        np.concatenate(vectors),
        scores if head else None,
        n,
        labelled=np.concatenate(covered),
        prior=None if head else scores,
        view=view if head else None,
        **({"rule": rule} if rule else {}),
    )
    return [_item(rows[shas[i]], source, why_chosen=reason) for i, reason in picks]


def bursts(db, n_groups: int = 20) -> list[dict]:
    """Groups from the last `imgrank dupes` (or the review page's regroup), and exact copies."""

    return _number_groups(dupe_listing(db)[:n_groups], score_source(db))


def _number_groups(groups: list[dict], source: str | None) -> list[dict]:

    out = []
    for i, g in enumerate(groups, 1):
        for p in g["photos"]:
            path = display_name(p["path"])
            out.append(
                {
                    "sha256": p["sha256"],
                    "path": path,
                    "name": path.rsplit("/", 1)[-1],
                    "folder": _folder(path),
                    "score": p["score"],
                    "label": p["label"],
                    "source": source,
                    "group": i,
                    "kind": g["kind"],
                    "keeper": p["keeper"],
                    "copy": p["copy"],
                    "keeper_by": g["keeper_by"],
                    "_path": p["path"],
                }
            )
    return out


def queue(db, name: str, n: int = 60) -> list[dict]:
    """One queue by name (see QUEUES)."""
    if name == "least-wanted":
        return least_wanted(db, n)
    if name == "suspects":
        return suspects(db, n)
    if name == "informative":
        return informative(db, n)
    if name == "bursts":
        return bursts(db, max(1, n // 3))
    raise KeyError(name)


def why(db, sha256: str) -> dict:
    """Why a photo scores as it does: the source, and the prior's top prompts and cues."""

    out: dict = {"source": score_source(db)}
    run = active_run(db)
    if run and out["source"] == "head":
        out["head"] = f"head of run {run['id']}"
    try:
        out["prior"] = explain_prior(db, current_model_id(db), [sha256]).get(sha256)
    except ImgrankError as e:  # the prior needs the text encoder once; the page works without it
        out["prior_error"] = str(e)
    return out


def shown_first(db, n: int, rows: list) -> list[str]:
    """The n paths a viewer sorted by date showed first after the last `order`: the n imgrank times
    at the least-wanted end (deleted files keep their records until `restore`, so a deletion the
    daemon has already noticed does not pull unseen photos into the n). Without any order yet,
    the first n of the ranking."""

    times = {p: r.set_ns for p, r in owntimes.records(db).items() if r.set_ns is not None}
    if not times:
        return [r.path for r in rows[:n]]
    ordered = [r for r in rows if r.path in times]
    newest_first = len(ordered) < 2 or times[ordered[0].path] >= times[ordered[-1].path]  # --oldest-first
    return sorted(times, key=lambda p: (times[p], p), reverse=newest_first)[:n]


def keep_survivors(db, n: int) -> dict:
    """The owner went through the first n photos in their viewer and deleted what they wanted: those
    still on disk get a `keep` label (source `reviewed`), unless they already have a label."""
    import os

    rows = ranked(db)
    by_path = {r.path: r for r in rows}
    shown = shown_first(db, n, rows)
    out = {"looked_at": len(shown), "kept": 0, "already_labelled": 0, "gone": 0}
    labelled: set[str] = set()
    for path in shown:
        r = by_path.get(path)
        if r is None or not os.path.lexists(path):
            out["gone"] += 1  # deleted since (the daemon or a scan may have noticed already)
        elif r.label is not None or r.sha256 in labelled:
            out["already_labelled"] += 1
        else:
            set_label(db, r.sha256, "keep", "reviewed", r.path)
            labelled.add(r.sha256)
            out["kept"] += 1
    return out
