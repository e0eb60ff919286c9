"""Near-duplicates and bursts: groups of near-identical shots, one keeper each; exact copies by content.

Two photos are close when the cosine similarity of their image vectors is at least the threshold.
Groups do not chain: the photo with the most close neighbours (then the most central) leads a group
and takes its close neighbours not yet in a group, then the next, so every member is within the
threshold of its group's leader (a slow pan of fifty shots becomes several groups, not one).

Finding the close pairs is never all pairs of a large library:
- up to EXACT_BELOW photos, exactly: blocks of a matrix product, each pair once (the cheaper way there);
- above, with an inverted-file index (as faiss's IVF-Flat, in numpy): about sqrt(6N) pivots cut
  the photos into cells, and each photo is compared with the photos of its 6 nearest cells, in
  float32; two photos close to a third are compared too. About N^1.5 in time, N in memory. The
  pivots are drawn with a fixed seed, so the same photos always give the same groups.
The grouping itself reads each photo's list of close neighbours once; nothing is quadratic in N.

`refresh` keeps the stored groups current cheaply (the daemon after photos arrive or go, and `scan`):
only the new photos are compared with all, and only the groups they or vanished photos touch are
formed again. `regroup` (the `dupes` command) groups everything afresh.

Within a group the best photo (lowest deletion score: the head's, else the prior's) keeps its
rank; the others move up the deletion order (`adjust`, used by the ranking). This module owns the
`dupe_groups` table: every grouped photo with its group, and every other photo looked at with none.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np

from imgrank.errors import ImgrankError

# Cosine similarity of image vectors at or above which two photos are near-duplicates. With CLIP-like
# models, shots of one burst (same scene, a moment apart) sit at 0.95-0.99 and two different photos of
# one subject at 0.80-0.93 (see the README); 0.95 keeps the second kind apart.
DEFAULT_THRESHOLD = 0.95
# Up to this many photos all pairs are compared exactly: on two cores a block of the matrix product
# costs about as much per photo as the index below 5,000 photos (scripts/bench_dupes.py).
EXACT_BELOW = 5_000
# `refresh` compares the new photos with all while that is fewer pairs than this (~2 s); beyond, a
# full regrouping is cheaper.
REFRESH_PAIRS = 50_000_000
# Cells each photo looks in (its most similar pivots): more finds more pairs split by a cell's edge
# and costs more; 6 found every close pair of scripts/bench_dupes.py's libraries up to 50,000.
PROBES = 6
BLOCK = 2**22  # entries of a similarity matrix at a time (16 MB of float32)
SETTING = "dupes_basis"  # the model and threshold of the stored grouping


def near_groups(
    vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD, exact: bool | None = None
) -> np.ndarray:
    """Group id per row (its leader's row), -1 for a photo with no near-duplicate.

    `exact` compares all pairs; by default only up to EXACT_BELOW rows, above which an ANN index
    finds the close pairs (see the module's docstring).
    """
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(v) < 2:
        return np.full(len(v), -1, dtype=np.int64)
    if exact is None:
        exact = len(v) <= EXACT_BELOW
    a, b, sim = exact_pairs(v, threshold) if exact else index_pairs(v, threshold)
    return leaders(len(v), a, b, sim)


def exact_pairs(v: np.ndarray, threshold: float, rows: np.ndarray | None = None) -> tuple:
    """Close pairs (a, b, similarity), each once with a < b: among all rows of `v`, or between `rows`
    and all. Blocks of the similarity matrix, so memory stays within BLOCK floats."""
    found = [(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))]
    every = rows is None
    rows = np.arange(len(v)) if rows is None else np.asarray(rows, dtype=np.int64)
    step = max(16, BLOCK // max(len(v), 1))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        # All pairs once: a block of rows needs only the columns from its first row on.
        first = int(block[0]) if every else 0
        sims = v[block] @ v[first:].T
        i, j = np.nonzero(sims >= threshold)
        found.append((block[i], j + first, sims[i, j]))
    a, b, sim = (np.concatenate(x) for x in zip(*found, strict=True))
    return _pairs_once(a, b, sim)


def index_pairs(v: np.ndarray, threshold: float, clock: dict | None = None) -> tuple:
    """Close pairs (a, b, similarity) found with an inverted-file index, each once with a < b.

    As faiss's IVF-Flat: about sqrt(PROBES * N) pivots cut the photos into cells (each photo's home is
    its most similar pivot); each photo is compared, in float32 blocks, with the photos living in its
    PROBES most similar cells. Two photos close to a third are candidates too. `clock`, if given, gets
    the seconds of each step ("build": pivots and cells, "search", "check").
    """
    clock = {} if clock is None else clock
    tick = time.perf_counter()
    n = len(v)
    pivots = _pivots(v, max(1, int(np.sqrt(PROBES * n))))
    home, probe = _cells(v, pivots)
    clock["build"], tick = time.perf_counter() - tick, time.perf_counter()
    a, b = _within_cells(v, threshold, home, probe)
    clock["search"], tick = time.perf_counter() - tick, time.perf_counter()
    # A pair split across cells neither looked in is found through a third photo close to both.
    a, b, sim = _pairs_once(*_checked(v, *_shared_neighbours(n, a, b), threshold, both=True))
    clock["check"] = time.perf_counter() - tick
    return a, b, sim


def _pivots(v: np.ndarray, cells: int) -> np.ndarray:
    """`cells` unit pivots: photos drawn with a fixed seed (the same cells every run), each then moved
    to the middle of the sample photos nearest it (one step of k-means: more even cells)."""
    rng = np.random.default_rng(0)
    pivots = v[np.sort(rng.choice(len(v), cells, replace=False))].copy()
    sample = v[np.sort(rng.choice(len(v), min(len(v), 8 * cells), replace=False))]
    nearest = np.argmax(sample @ pivots.T, axis=1)
    sums = np.zeros_like(pivots)
    np.add.at(sums, nearest, sample)
    moved = np.bincount(nearest, minlength=cells) > 0
    pivots[moved] = sums[moved] / np.linalg.norm(sums[moved], axis=1, keepdims=True)
    return pivots


def _cells(v: np.ndarray, pivots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's home cell (its most similar pivot) and the PROBES cells it looks in."""
    n, cells = len(v), len(pivots)
    probes = min(PROBES, cells)
    home, probe = np.empty(n, np.int64), np.empty((n, probes), np.int64)
    step = max(16, BLOCK // cells)
    for start in range(0, n, step):
        sims = np.negative(v[start : start + step] @ pivots.T)  # most similar first
        home[start : start + step] = np.argmin(sims, axis=1)
        probe[start : start + step] = (
            np.argpartition(sims, probes - 1, axis=1)[:, :probes] if probes < cells else np.arange(cells)
        )
    return home, probe


def _within_cells(v: np.ndarray, threshold: float, home: np.ndarray, probe: np.ndarray) -> tuple:
    """Close pairs of a photo and a photo living in a cell it looks in (float32, in blocks)."""
    cells = probe.max() + 1
    living = _by_cell(home, np.arange(len(v)), cells)
    looking = _by_cell(probe.ravel(), np.repeat(np.arange(len(v)), probe.shape[1]), cells)
    found = [(np.empty(0, np.int64), np.empty(0, np.int64))]
    for members, queries in zip(living, looking, strict=True):
        if not len(members):
            continue
        step = max(16, BLOCK // len(members))
        for start in range(0, len(queries), step):
            rows = queries[start : start + step]
            i, j = np.nonzero(v[rows] @ v[members].T >= threshold)
            found.append((rows[i], members[j]))
    a, b = (np.concatenate(x) for x in zip(*found, strict=True))
    return a, b


def _by_cell(cell: np.ndarray, row: np.ndarray, cells: int) -> list[np.ndarray]:
    """The rows in each cell, in row order."""
    order = np.argsort(cell, kind="stable")
    return np.split(row[order], np.cumsum(np.bincount(cell, minlength=cells))[:-1])


def _checked(v: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float, both: bool = False) -> tuple:
    """The candidate pairs whose float32 similarity reaches the threshold (with it, if `both`)."""
    a, b = _pairs_once(a, b, np.zeros(len(a), np.float32))[:2]
    step = max(1, BLOCK // (4 * v.shape[1]))  # pairs at a time: two slices of vectors stay small
    sim = np.concatenate(
        [np.zeros(0, np.float32)]
        + [np.einsum("ij,ij->i", v[a[i : i + step]], v[b[i : i + step]]) for i in range(0, len(a), step)]
    )
    keep = sim >= threshold
    return (a[keep], b[keep], sim[keep]) if both else (a[keep], b[keep])


def _shared_neighbours(n: int, a: np.ndarray, b: np.ndarray, most: int = 32) -> tuple:
    """The pairs (a, b) and every pair of two photos close to one same photo (of at most `most`)."""
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    dst = dst[np.argsort(src, kind="stable")]
    degree = np.bincount(src, minlength=n)
    start = np.concatenate([[0], np.cumsum(degree)])
    out_a, out_b = [a], [b]
    for d in np.unique(degree[(degree >= 2) & (degree <= most)]).tolist():
        around = dst[start[np.flatnonzero(degree == d)][:, None] + np.arange(d)]  # photos x d
        i, j = np.triu_indices(d, 1)
        out_a.append(around[:, i].ravel())
        out_b.append(around[:, j].ravel())
    return np.concatenate(out_a), np.concatenate(out_b)


def _pairs_once(a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> tuple:
    """Pairs (a < b, no self pairs) without repeats, sorted."""
    a, b, sim = a.astype(np.int64), b.astype(np.int64), sim.astype(np.float32)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    lo, hi, sim = lo[keep], hi[keep], sim[keep]
    _, first = np.unique(lo * (int(hi.max(initial=0)) + 1) + hi, return_index=True)
    return lo[first], hi[first], sim[first]


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
    from imgrank.db import get_setting
    from imgrank.model import current_model_id

    if threshold is not None and not 0 < threshold < 1:
        raise ImgrankError(f"--threshold must be between 0 and 1, not {threshold}")
    model_id = current_model_id(db)
    stored = json.loads(get_setting(db, SETTING) or "{}")
    if threshold is None:
        threshold = stored.get("threshold", DEFAULT_THRESHOLD) if stored.get("model") == model_id else None
    return model_id, threshold if threshold is not None else DEFAULT_THRESHOLD


def _present_vectors(db, model_id: str, only: set[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Content hashes (sorted) and image vectors of the photos present under the roots (or of `only`)."""
    from imgrank.index import present_files
    from imgrank.vectors import image_vectors

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
    from imgrank.db import set_setting

    start = time.monotonic()
    model_id, threshold = _basis(db, threshold)
    shas, v = _present_vectors(db, model_id)
    rows = _group_ids(shas, near_groups(v, threshold))
    with db.atomic():
        db.execute("DELETE FROM dupe_groups")
        db.conn.executemany("INSERT INTO dupe_groups (sha256, group_id) VALUES (?, ?)", rows)
        set_setting(db, SETTING, json.dumps({"model": model_id, "threshold": threshold}))
    return _summary(rows, start, threshold, "all")


def refresh(db, threshold: float | None = None) -> dict:
    """Bring the stored groups up to date with the photos present now, cheaply: new photos are compared
    with all, and only the groups that they or vanished photos touch are formed again. Groups
    everything afresh when nothing is stored yet, the model or threshold changed, or that is cheaper.
    Returns counts ("new", "gone") and seconds; "how" is "unchanged", "some" or "all"."""
    from imgrank.db import get_setting
    from imgrank.index import present_files
    from imgrank.vectors import embedded

    start = time.monotonic()
    model_id, threshold = _basis(db, threshold)
    if get_setting(db, SETTING) != json.dumps({"model": model_id, "threshold": threshold}):
        return regroup(db, threshold)
    stored = dict(db.execute("SELECT sha256, group_id FROM dupe_groups").fetchall())
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
            db.conn.executemany("DELETE FROM dupe_groups WHERE sha256 = ?", [(s,) for s in chunk])
        db.conn.executemany("INSERT INTO dupe_groups (sha256, group_id) VALUES (?, ?)", redone)
    rows = db.execute("SELECT sha256, group_id FROM dupe_groups").fetchall()
    return _summary(rows, start, threshold, "some", new=len(new), gone=len(gone))


def load_groups(db) -> dict[str, int]:
    """sha256 -> near-duplicate group id, as last stored (photos in no group are left out)."""
    return dict(db.execute("SELECT sha256, group_id FROM dupe_groups WHERE group_id IS NOT NULL").fetchall())


def _group_key(row, near: dict[str, int], copies: set[str]):
    if row.sha256 in near:
        return ("near", near[row.sha256])
    return ("copies", row.sha256) if row.sha256 in copies else None


def grouped(rows: list, near: dict[str, int]) -> dict[tuple, list]:
    """Scored photos (ranking rows with path, score, sha256) by group: near-duplicates, exact copies."""
    per_sha = defaultdict(int)
    for r in rows:
        per_sha[r.sha256] += 1
    copies = {s for s, n in per_sha.items() if n > 1}
    out: dict[tuple, list] = defaultdict(list)
    for r in rows:
        key = _group_key(r, near, copies)
        if key is not None:
            out[key].append(r)
    return {k: sorted(v, key=lambda r: (r.score, r.path)) for k, v in out.items() if len(v) > 1}


def moved_up(score: float) -> float:
    """A non-keeper's deletion score: halfway from its own to 1 (its chance of being kept halves)."""
    return score + (1.0 - score) / 2


def adjust(rows: list, near: dict[str, int]) -> list:
    """The ranking with each group's keeper (lowest score) in place and the others moved up, resorted."""
    if not rows:
        return rows
    losers = {id(r) for members in grouped(rows, near).values() for r in members[1:]}
    if not losers:
        return rows
    out = [r._replace(score=moved_up(r.score)) if id(r) in losers else r for r in rows]
    return sorted(out, key=lambda r: (-r.score, r.path))


def listing(db) -> list[dict]:
    """Every group of the stored grouping plus exact copies: members best first, the keeper marked."""
    from imgrank.ranking import scored_photos

    groups = grouped(scored_photos(db), load_groups(db))
    out = []
    for (kind, _), members in sorted(groups.items(), key=lambda kv: kv[1][0].path):
        out.append(
            {
                "kind": "exact copies" if kind == "copies" else "near-duplicates",
                "photos": [
                    {
                        "path": r.path,
                        "sha256": r.sha256,
                        "score": round(r.score, 4),
                        "label": r.label,
                        "keeper": i == 0,
                    }
                    for i, r in enumerate(members)
                ],
            }
        )
    return out
