"""Near-duplicates and bursts: groups of near-identical shots, one keeper each; exact copies by content.

Two photos are close when the cosine similarity of their image vectors is at least the threshold.
Groups do not chain: the photo with the most close neighbours (then the most central) leads a group
and takes its close neighbours not yet in a group, then the next, so every member is within the
threshold of its group's leader (a slow pan of fifty shots becomes several groups, not one).

The close pairs come from imgrank.learn.neighbours (exact up to a few thousand photos, an inverted-file
index above: never all pairs of a large library); the grouping reads each photo's list of close
neighbours once; nothing is quadratic in N.

`refresh` keeps the stored groups current cheaply (the daemon after photos arrive or go, and `scan`):
only the new photos are compared with all, and only the groups they or vanished photos touch are
formed again. `regroup` (the `dupes` command) groups everything afresh.

Within a group the keeper is the shot the owner would keep: learned from their own choices inside
groups (imgrank.learn.keeper; `learn_keeper`, run by `train` and `dupes`), else the lowest deletion score
(the head's, else the prior's). The keeper keeps its rank; the others move up the deletion order,
never to below their keeper (`adjust`, used by the ranking). The groups are stored in the
`dupe_groups` table (store/dupes.py): every grouped photo with its group, and every other photo
looked at with none.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np

from imgrank.errors import ImgrankError
from imgrank.learn import keeper
from imgrank.learn.keeper import Keeper, facts
from imgrank.learn.neighbours import NEAR_DUP, close_pairs, exact_pairs
from imgrank.store import dupes as dupe_groups
from imgrank.store.cues import load_cues
from imgrank.store.labels import current_sources

# `refresh` compares the new photos with all while that is fewer pairs than this (~2 s); beyond, a
# full regrouping is cheaper.
REFRESH_PAIRS = 50_000_000
SETTING = "dupes_basis"  # the model and threshold of the stored grouping
KEEPER = "keeper"  # the learned keeper (keeper.Keeper as JSON), or "null" when there is none


def near_groups(vectors: np.ndarray, threshold: float = NEAR_DUP, exact: bool | None = None) -> np.ndarray:
    """Group id per row (its leader's row), -1 for a photo with no near-duplicate.

    `exact` compares all pairs; by default only up to EXACT_BELOW rows, above which an ANN index
    finds the close pairs (see the module's docstring).
    """
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return leaders(len(v), *close_pairs(v, threshold, exact))


def leaders(n: int, a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Group id per row from the close pairs: the photo with the most close neighbours (then the
    highest sum of their similarities, then the first row) leads and takes its free neighbours."""
    group = np.full(n, -1, dtype=np.int64)
    if not len(a):
        return group
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    by_src = np.argsort(src, kind="stable")
    neighbours = dst[by_src]
    degree = np.bincount(src, minlength=n)
    start = np.concatenate([[0], np.cumsum(degree)])
    strength = np.bincount(src, weights=np.concatenate([sim, sim]).astype(np.float64), minlength=n)
    order = np.lexsort((np.arange(n), -strength, -degree))
    for i in order[: int((degree > 0).sum())].tolist():  # one look at each photo with a neighbour
        if group[i] != -1:
            continue
        around = neighbours[start[i] : start[i + 1]]
        free = around[group[around] == -1]
        if len(free):
            group[i] = i
            group[free] = i
    return group


def _basis(db, threshold: float | None) -> tuple[str, float]:
    """The model and threshold to group with: `threshold`, else the stored grouping's, else the default."""
    from imgrank.store.db import get_setting  # lazy: sqlite_utils
    from imgrank.store.vectors import current_model_id  # lazy: sqlite_utils

    if threshold is not None and not 0 < threshold < 1:
        raise ImgrankError(f"--threshold must be between 0 and 1, not {threshold}")
    model_id = current_model_id(db)
    stored = json.loads(get_setting(db, SETTING) or "{}")
    if threshold is None:
        threshold = stored.get("threshold", NEAR_DUP) if stored.get("model") == model_id else None
    return model_id, threshold if threshold is not None else NEAR_DUP


def _present_vectors(db, model_id: str, only: set[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Content hashes (sorted) and image vectors of the photos present under the roots (or of `only`)."""
    from imgrank.index import present_files  # lazy: sqlite_utils
    from imgrank.store.vectors import image_vectors  # lazy: sqlite_utils

    wanted = {sha for _, sha in present_files(db)} if only is None else only
    shas, parts = [], []
    for chunk, vecs in image_vectors(db, model_id):
        keep = [i for i, s in enumerate(chunk) if s in wanted]
        shas += [chunk[i] for i in keep]
        parts.append(vecs[keep])
    dim = parts[0].shape[1] if parts else 0
    return shas, np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def _group_ids(shas: list[str], group: np.ndarray, first: int = 0) -> list[tuple[str, int | None]]:
    """(sha256, group id) rows; ids count from `first` (above the ids kept elsewhere)."""
    return [(s, first + int(g) if g >= 0 else None) for s, g in zip(shas, group, strict=True)]


def _summary(rows, start: float, threshold: float, how: str, **more) -> dict:
    ids = [g for _, g in rows if g is not None]
    return {
        "photos": len(rows),
        "groups": len(set(ids)),
        "grouped": len(ids),
        "threshold": threshold,
        "how": how,
        **more,
        "seconds": round(time.monotonic() - start, 3),
    }


def regroup(db, threshold: float | None = None) -> dict:
    """Group the present photos afresh and store the groups. Returns counts and seconds."""
    from imgrank.store.db import set_setting  # lazy: sqlite_utils

    start = time.monotonic()
    model_id, threshold = _basis(db, threshold)
    shas, v = _present_vectors(db, model_id)
    rows = _group_ids(shas, near_groups(v, threshold))
    with db.atomic():
        dupe_groups.replace(db, rows)
        set_setting(db, SETTING, json.dumps({"model": model_id, "threshold": threshold}))
    return _summary(rows, start, threshold, "all")


def refresh(db, threshold: float | None = None) -> dict:
    """Bring the stored groups up to date with the photos present now, cheaply: new photos are compared
    with all, and only the groups that they or vanished photos touch are formed again. Groups
    everything afresh when nothing is stored yet, the model or threshold changed, or that is cheaper.
    Returns counts ("new", "gone") and seconds; "how" is "unchanged", "some" or "all"."""
    from imgrank.index import present_files  # lazy: sqlite_utils
    from imgrank.store.db import get_setting  # lazy: sqlite_utils
    from imgrank.store.vectors import embedded  # lazy: sqlite_utils

    start = time.monotonic()
    model_id, threshold = _basis(db, threshold)
    if get_setting(db, SETTING) != json.dumps({"model": model_id, "threshold": threshold}):
        return regroup(db, threshold)
    stored = dupe_groups.stored(db)
    present = {sha for _, sha in present_files(db)} & embedded(db, model_id)
    new, gone = sorted(present - stored.keys()), sorted(stored.keys() - present)
    if not new and not gone:
        return _summary(list(stored.items()), start, threshold, "unchanged", new=0, gone=0)
    if len(new) * len(present) > REFRESH_PAIRS:
        return {**regroup(db, threshold), "new": len(new), "gone": len(gone)}
    shas, v = _present_vectors(db, model_id, present)
    row = {s: i for i, s in enumerate(shas)}
    a, b, _ = exact_pairs(v, threshold, rows=np.array([row[s] for s in new], dtype=np.int64))
    touched = set(new) | {shas[i] for i in np.concatenate([a, b]).tolist()}
    groups = {stored[s] for s in touched | set(gone) if stored.get(s) is not None}
    members = {s for s, g in stored.items() if g in groups and s in present}
    local = sorted(touched | members)
    above = max((g for g in stored.values() if g is not None), default=-1) + 1
    redone = _group_ids(local, near_groups(v[[row[s] for s in local]], threshold), above)
    with db.atomic():
        for chunk in (gone, local):
            dupe_groups.forget(db, chunk)
        dupe_groups.add(db, redone)
    rows = list(dupe_groups.stored(db).items())
    return _summary(rows, start, threshold, "some", new=len(new), gone=len(gone))


def _group_key(row, near: dict[str, int], copies: set[str]):
    if row.sha256 in near:
        return ("near", near[row.sha256])
    return ("copies", row.sha256) if row.sha256 in copies else None


def grouped(rows: list, near: dict[str, int], utility: dict[str, float] | None = None) -> dict[tuple, list]:
    """Scored photos (ranking rows with path, score, sha256) by group: near-duplicates, exact copies.
    Members best first, the keeper first of all: the highest learned utility (sha256 -> utility,
    see keeper_utility), then the lowest deletion score, then the path."""
    per_sha = defaultdict(int)
    for r in rows:
        per_sha[r.sha256] += 1
    copies = {s for s, n in per_sha.items() if n > 1}
    out: dict[tuple, list] = defaultdict(list)
    for r in rows:
        key = _group_key(r, near, copies)
        if key is not None:
            out[key].append(r)
    utility = utility or {}

    def best_first(r):
        return (-utility.get(r.sha256, 0.0), r.score, r.path)

    return {k: sorted(v, key=best_first) for k, v in out.items() if len(v) > 1}


def moved_up(score: float) -> float:
    """A non-keeper's deletion score: halfway from its own to 1 (its chance of being kept halves)."""
    return score + (1.0 - score) / 2


def adjust(rows: list, near: dict[str, int], utility: dict[str, float] | None = None) -> list:
    """The ranking with each group's keeper in place and the others moved up (never to below their
    keeper's score, and on a tie before it: a keeper comes after the rest of its group), resorted."""
    if not rows:
        return rows
    index = {id(r): i for i, r in enumerate(rows)}
    floor, keepers = {}, set()
    for members in grouped(rows, near, utility).values():
        keepers.add(index[id(members[0])])
        for r in members[1:]:
            floor[index[id(r)]] = members[0].score
    if not floor:
        return rows
    out = [
        (r._replace(score=max(moved_up(r.score), floor[i])) if i in floor else r, i in keepers)
        for i, r in enumerate(rows)
    ]
    out.sort(key=lambda pair: (-pair[0].score, pair[1], pair[0].path))
    return [r for r, _ in out]


# --- the keeper learned from the owner (imgrank.learn.keeper: the arrays; here, the rows) ---------------


def _facts(db, shas: list[str]) -> np.ndarray:
    """keeper.facts for these contents: pixels and bytes from the index, the decode cues."""
    from imgrank.index import content_facts  # lazy: sqlite_utils

    found, cues = content_facts(db, shas), load_cues(db, shas)
    fact = [found.get(s) for s in shas]
    cue = [cues.get(s, {}) for s in shas]
    return facts(
        [f.width if f else None for f in fact],
        [f.height if f else None for f in fact],
        [f.size if f else None for f in fact],
        *([c.get(m) for c in cue] for m in ("sharpness", "dark", "bright", "mean")),
    )


def learn_keeper(db) -> dict:
    """Learn which shot of a burst the owner keeps and store it (the `keeper` setting). In each group
    of near-duplicates among the labelled photos and the shots close to them, every shot labelled
    keep is preferred to every shot labelled delete, and so is every unlabelled shot still present
    in a group the owner deleted from in their viewer (the daemon's `deleted` labels: they left it).
    Needs the `train` extra (scikit-learn). With preferences from fewer than keeper.MIN_GROUPS
    groups it stores none and groups keep the lowest deletion score. Returns {"groups", "pairs",
    "learned", "needed"}."""
    from imgrank.index import present_files  # lazy: sqlite_utils
    from imgrank.store.db import set_setting  # lazy: sqlite_utils

    model_id, threshold = _basis(db, None)
    sources = current_sources(db)
    present = {sha for _, sha in present_files(db)}
    shas, v = _present_vectors(db, model_id, set(sources) | present)
    row = {s: i for i, s in enumerate(shas)}
    labelled = np.array(sorted(row[s] for s in sources if s in row), dtype=np.int64)
    a, b, _ = exact_pairs(v, threshold, rows=labelled)  # the labelled with all: never all pairs
    close = np.unique(np.concatenate([labelled, a, b]))  # the labelled and the shots near them
    shas, v = [shas[i] for i in close], v[close]
    group = near_groups(v, threshold) if len(shas) else np.zeros(0, np.int64)
    label = [sources.get(s, (None, None)) for s in shas]
    kept = np.array([lab == "keep" for lab, _ in label], dtype=bool)
    deleted = np.array([lab == "delete" for lab, _ in label], dtype=bool)
    left_in = {
        int(g)
        for g, (lab, src) in zip(group, label, strict=True)
        if g >= 0 and (lab, src) == ("delete", "deleted")
    }
    kept |= np.array(
        [
            lab is None and s in present and int(g) in left_in
            for s, g, (lab, _) in zip(shas, group, label, strict=True)
        ],
        dtype=bool,
    )
    winners, losers = keeper.preferences(group, kept, deleted)
    learned = keeper.fit(v, _facts(db, shas), winners, losers, group[winners]) if len(winners) else None
    if learned is not None:
        learned.model = model_id
    set_setting(db, KEEPER, learned.to_json() if learned else "null")
    return {
        "groups": len(np.unique(group[winners])),
        "pairs": len(winners),
        "learned": learned is not None,
        "needed": keeper.MIN_GROUPS,
    }


def stored_keeper(db):
    """The learned keeper (keeper.Keeper) for the store's embedding model, or None."""
    from imgrank.store.db import get_setting  # lazy: sqlite_utils
    from imgrank.store.vectors import current_model_id  # lazy: sqlite_utils

    text = get_setting(db, KEEPER)
    found = Keeper.from_json(text) if text else None
    return found if found is not None and found.model == current_model_id(db) else None


def keeper_utility(db, near: dict[str, int]) -> dict[str, float] | None:
    """sha256 -> the learned keeper's utility for every grouped photo (see grouped), or None without one."""
    from imgrank.store.vectors import image_vectors_of  # lazy: sqlite_utils

    learned = stored_keeper(db) if near else None
    if learned is None:
        return None
    shas, v = image_vectors_of(db, learned.model, sorted(near))
    if not shas or v.shape[1] != len(learned.w_image):
        return None
    u = learned.utility(v, _facts(db, shas), np.array([near[s] for s in shas]))
    return dict(zip(shas, u.tolist(), strict=True))
