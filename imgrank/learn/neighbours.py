"""Which photos are the same shot: pairs of image vectors whose cosine similarity reaches a threshold.

One place for that question, asked by the near-duplicate groups (`dupes`: bursts, one keeper each)
and by training's validation groups (`evaluation.near_duplicate_groups`: a burst is held out whole).
Never all pairs of a large library:
- up to EXACT_BELOW photos, exactly: blocks of a matrix product, each pair once (the cheaper way there);
- above, with an inverted-file index (as faiss's IVF-Flat, in numpy): about sqrt(6N) pivots cut
  the photos into cells, and each photo is compared with the photos of its 6 nearest cells, in
  float32; two photos close to a third are compared too. About N^1.5 in time, N in memory. The
  pivots are drawn with a fixed seed, so the same photos always give the same pairs.
numpy only, no SQL.
"""

from __future__ import annotations

import time

import numpy as np

# Cosine similarity of image vectors at or above which two photos are near-duplicates. With CLIP-like
# models, shots of one burst (same scene, a moment apart) sit at 0.95-0.99 and two different photos of
# one subject at 0.80-0.93 (see docs/how-learning-works.md); 0.95 keeps the second kind apart.
NEAR_DUP = 0.95
# Up to this many photos all pairs are compared exactly: on two cores a block of the matrix product
# costs about as much per photo as the index below 5,000 photos (scripts/bench_dupes.py).
EXACT_BELOW = 5_000
# Cells each photo looks in (its most similar pivots): more finds more pairs split by a cell's edge
# and costs more; 6 found every close pair of scripts/bench_dupes.py's libraries up to 50,000.
PROBES = 6
BLOCK = 2**22  # entries of a similarity matrix at a time (16 MB of float32)


def close_pairs(v: np.ndarray, threshold: float = NEAR_DUP, exact: bool | None = None) -> tuple:
    """Pairs (a, b, similarity) of unit rows of `v` with similarity >= threshold, each once with a < b.
    `exact` compares all pairs; by default only up to EXACT_BELOW rows, above which the index does."""
    v = np.ascontiguousarray(v, dtype=np.float32)
    if len(v) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    if exact is None:
        exact = len(v) <= EXACT_BELOW
    return exact_pairs(v, threshold) if exact else index_pairs(v, threshold)


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
