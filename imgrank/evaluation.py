"""Evaluation without torch: ranking metrics, near-duplicate groups and stratified group folds.

Everything here is plain numpy, so the training recipe (`train.py`), the benchmarks and the
tests share one definition of "held out" and of "how good".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from imgrank.neighbours import NEAR_DUP, close_pairs

MAX_GROUP = 12  # a burst longer than this is split: a group is at most this many photos
STRATIFY_TOLERANCE = 0.05  # a fold whose delete share is further than this from the whole set's warns

# --- metrics ---


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Probability a random delete scores above a random keep (ties count half)."""
    y = np.asarray(y, bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = np.asarray(p)[order]
    _, start, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    ranks[order] = np.repeat(start + (counts + 1) / 2.0, counts)  # average rank of tied scores
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the precision-recall curve as a step function over distinct thresholds."""
    y = np.asarray(y, np.float64)
    if y.sum() == 0:
        return None
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ys, ps = y[order], np.asarray(p)[order]
    tp, fp = np.cumsum(ys), np.cumsum(1 - ys)
    last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics that mean something under imbalance, for P(delete) against true labels (1 = delete)."""
    y = np.asarray(y, int)
    p = np.asarray(p, np.float64)
    order = np.argsort(-p, kind="mergesort")
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    def rnd(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return {
        "n": len(y),
        "roc_auc": rnd(roc_auc(y, p)),
        "ap": rnd(average_precision(y, p)),
        "chance_ap": ratio(int(y.sum()), len(y)),
        "precision_at_10": rnd(float(y[order[:10]].mean())) if len(y) else None,
        "precision_at_50": rnd(float(y[order[:50]].mean())) if len(y) else None,
        "delete": {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)},
        "keep": {"precision": ratio(tn, tn + fn), "recall": ratio(tn, tn + fp)},
        # rows: true label, columns: predicted label
        "confusion": {"keep": {"keep": tn, "delete": fp}, "delete": {"keep": fn, "delete": tp}},
    }


# --- near-duplicate groups ---


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32), so a product of two is their cosine similarity."""
    v = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))


def near_duplicate_groups(
    vectors: np.ndarray, threshold: float = NEAR_DUP, max_size: int = MAX_GROUP
) -> np.ndarray:
    """Group id per row: photos that are the same shot. Complete linkage: EVERY pair in a group has
    cosine similarity at or above the threshold (found by imgrank.neighbours, as `dupes` finds them),
    so groups cannot chain (A~B, B~C does not join A and C unless A~C), and no group grows past
    `max_size`.

    Pairs are merged from the most similar down (agglomerative complete linkage, restricted to the
    sparse graph of close pairs): two groups join when every cross pair is close and the result
    fits the cap."""
    n = len(vectors)
    group = np.arange(n)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    i_idx, j_idx, sims = close_pairs(unit_rows(vectors), threshold)  # the same search as `dupes`
    neighbours: dict[int, set[int]] = {}
    for i, j in zip(i_idx.tolist(), j_idx.tolist(), strict=True):
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    for k in np.argsort(-sims, kind="stable"):
        a, b = int(group[i_idx[k]]), int(group[j_idx[k]])
        if a == b or len(members[a]) + len(members[b]) > max_size:
            continue
        if all(set(members[b]) <= neighbours.get(m, set()) for m in members[a]):
            keep, gone = min(a, b), max(a, b)
            for m in members[gone]:
                group[m] = keep
            members[keep] += members.pop(gone)
    return group


# --- folds ---


@dataclass
class Folds:
    """Fold index per row (-1: a group too big to hold out, always in training) and what to warn about."""

    fold: np.ndarray
    k: int
    too_big: list[int] = field(default_factory=list)  # group ids kept in training
    warnings: list[str] = field(default_factory=list)

    def held(self, f: int) -> np.ndarray:
        return self.fold == f


def _assign(y: np.ndarray, inverse: np.ndarray, n_groups: int, k: int, rng) -> np.ndarray:
    """Groups to folds as scikit-learn's StratifiedGroupKFold does: the groups whose class mix is
    most lopsided first (ties random), each to the fold where the per-class shares stay most even
    (the mean over the two classes of the standard deviation of the folds' shares; among equals,
    the smallest fold, then the first). Plain floats, not numpy, in the loop: it runs once per
    group, over a handful of folds, and 25,000 labels took 1.2 s with numpy on small arrays."""
    counts = np.zeros((n_groups, 2))
    np.add.at(counts, (inverse, y), 1)
    scale = [1 / max(t, 1.0) for t in counts.sum(axis=0)]
    shuffled = rng.permutation(n_groups)
    order = shuffled[np.argsort(-np.abs(counts[shuffled, 0] - counts[shuffled, 1]), kind="stable")]
    share = [[0.0, 0.0] for _ in range(k)]  # each fold's share of each class so far
    size = [0.0] * k
    fold_of_group = np.empty(n_groups, int)
    for g, (n0, n1) in zip(order.tolist(), counts[order].tolist(), strict=True):
        v = (n0 * scale[0], n1 * scale[1])
        s1 = [sum(f[c] for f in share) for c in (0, 1)]
        s2 = [sum(f[c] * f[c] for f in share) for c in (0, 1)]
        best: tuple = ()
        for f in range(k):  # the spread if g went to fold f: var = E[a²] - E[a]², over the folds
            spread = 0.0
            for c in (0, 1):
                mean = (s1[c] + v[c]) / k
                var = (s2[c] + 2 * v[c] * share[f][c] + v[c] * v[c]) / k - mean * mean
                spread += math.sqrt(max(var, 0.0)) / 2
            key = (round(spread, 12), size[f], f)
            best = min(best, key) if best else key
        f = best[2]
        fold_of_group[g] = f
        share[f][0] += v[0]
        share[f][1] += v[1]
        size[f] += n0 + n1
    return fold_of_group


def stratified_group_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int = 0, tolerance: float = STRATIFY_TOLERANCE
) -> Folds:
    """K folds in which a group never straddles two folds and each fold gets its share of deletes
    and keeps. A group larger than half a fold is too big to hold out: it stays in training (fold
    -1) and is named in the warnings, as is a fold whose delete share is off by more than `tolerance`."""
    y = np.asarray(y, int)
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    size = np.bincount(inverse)
    big = size > max(1, len(y) / k / 2)
    fold = np.full(len(y), -1)
    held = ~big[inverse]
    _, sub_inverse = np.unique(inverse[held], return_inverse=True)
    fold_of_group = _assign(y[held], sub_inverse, int(sub_inverse.max()) + 1 if held.any() else 0, k, rng)
    fold[held] = fold_of_group[sub_inverse]
    folds = Folds(fold, k, too_big=[int(g) for g in ids[big]])
    for g in folds.too_big:
        folds.warnings.append(
            f"a group of {int(size[ids == g][0])} near-duplicate photos is too big to hold out: "
            "it is always in training"
        )
    share = y[held].mean() if held.any() else 0.0
    off = [f for f in range(k) if (fold == f).any() and abs(y[fold == f].mean() - share) > tolerance]
    if off:
        worst = max(abs(y[fold == f].mean() - share) for f in off)
        folds.warnings.append(
            f"{len(off)} of {k} folds could not get their share of deletes within {tolerance:.0%} "
            f"(off by up to {worst:.0%}: near-duplicate groups are lumpy)"
        )
    return folds


def dominated_by_one_group(
    y: np.ndarray, groups: np.ndarray, held: np.ndarray, share: float = 0.5
) -> str | None:
    """A warning when one near-duplicate group is more than `share` of the held-out deletes or keeps."""
    y, groups = np.asarray(y, int), np.asarray(groups)
    for cls, name in ((1, "delete"), (0, "keep")):
        rows = held & (y == cls)
        if rows.sum() < 4:
            continue
        _, counts = np.unique(groups[rows], return_counts=True)
        if counts.max() > share * rows.sum():
            return (
                f"validation is dominated by one group of near-duplicates: {counts.max()} of its "
                f"{int(rows.sum())} {name} photos"
            )
    return None
