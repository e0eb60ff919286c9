"""Evaluation without torch: ranking metrics, near-duplicate groups and stratified group folds.

The metrics and the folds are scikit-learn's (imported where used: it is the `train` extra);
the near-duplicate groups are numpy. The training recipe (`train.py`), the benchmarks and the
tests share this one definition of "held out" and of "how good".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from imgrank.learn.neighbours import NEAR_DUP, close_pairs

MAX_GROUP = 12  # a burst longer than this is split: a group is at most this many photos
STRATIFY_TOLERANCE = 0.05  # a fold whose delete share is further than this from the whole set's warns

# --- metrics ---


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Probability a random delete scores above a random keep (scikit-learn's; None with one class)."""
    from sklearn.metrics import roc_auc_score  # scikit-learn: the `train` extra, off the scoring path

    y = np.asarray(y, int)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the precision-recall curve as a step function (scikit-learn's; None without a delete)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, int)
    return float(average_precision_score(y, p)) if y.sum() else None


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
        # None with fewer photos than that: "precision@50" of 40 photos would be their delete share
        "precision_at_10": rnd(float(y[order[:10]].mean())) if len(y) >= 10 else None,
        "precision_at_50": rnd(float(y[order[:50]].mean())) if len(y) >= 50 else None,
        "delete": {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)},
        "keep": {"precision": ratio(tn, tn + fn), "recall": ratio(tn, tn + fp)},
        # rows: true label, columns: predicted label
        "confusion": {"keep": {"keep": tn, "delete": fp}, "delete": {"keep": fn, "delete": tp}},
    }


def first_k(y: np.ndarray, p: np.ndarray) -> dict:
    """The plain-words check: of the held-out deletes, how many a ranking by `p` puts in its first k
    photos, with k their count times 1.5 rounded up to tens, and how many a random order would put
    there on average."""
    y = np.asarray(y, int)
    n_del = int(y.sum())
    k = min(10 * int(np.ceil(1.5 * n_del / 10)) or 10, len(y))  # 12 deletes: the first 20
    top = np.argsort(-np.asarray(p, np.float64), kind="stable")[:k]
    return {
        "deletes": n_del,
        "k": k,
        "found": int(y[top].sum()),
        "chance": round(n_del * k / max(len(y), 1), 1),
        "photos": len(y),
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
    cosine similarity at or above the threshold (found by imgrank.learn.neighbours, as `dupes` finds them),
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


def bundle_singles(
    y: np.ndarray, inverse: np.ndarray, size: np.ndarray, rng: np.random.Generator, units: int = 100
) -> np.ndarray:
    """Group id per row for StratifiedGroupKFold, with photos that are a group of their own bundled at
    random, by class, into about `units` bundles per class: StratifiedGroupKFold places one group at
    a time in Python (25,000 labels: 20,000 groups, seconds), and a bundle of single photos of one
    class is as easy to place evenly as each of them. Groups of near-duplicates stay as they are."""
    out = inverse.copy()
    single = size[inverse] == 1
    for c in (0, 1):
        rows = np.flatnonzero(single & (y == c))
        per = int(np.ceil(len(rows) / units)) if len(rows) else 1
        if per > 1:
            bundle = rng.permutation(len(rows)) // per
            out[rows] = len(size) + c * len(rows) + bundle
    return out


def stratified_group_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int = 0, tolerance: float = STRATIFY_TOLERANCE
) -> Folds:
    """K folds in which a group never straddles two folds and each fold gets its share of deletes
    and keeps. A group larger than half a fold is too big to hold out: it stays in training (fold
    -1) and is named in the warnings, as is a fold whose delete share is off by more than `tolerance`."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y, int)
    ids, inverse = np.unique(groups, return_inverse=True)
    size = np.bincount(inverse)
    big = size > max(1, len(y) / k / 2)
    fold = np.full(len(y), -1)
    held = np.flatnonzero(~big[inverse])
    units = bundle_singles(y, inverse, size, np.random.default_rng(seed))
    k = min(k, len(np.unique(units[held])))  # no more folds than groups to put in them
    if k >= 2:
        with warnings.catch_warnings():  # fewer deletes than folds: some folds hold none, said below
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            for f, (_, test) in enumerate(splitter.split(held, y[held], units[held])):
                fold[held[test]] = f
    folds = Folds(fold, max(k, 1), too_big=[int(g) for g in ids[big]])
    for g in folds.too_big:
        folds.warnings.append(
            f"a group of {int(size[ids == g][0])} near-duplicate photos is too big to hold out: "
            "it is always in training"
        )
    held = fold >= 0
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
