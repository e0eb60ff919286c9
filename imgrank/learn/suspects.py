"""Checking labels: held-out evidence that a label is wrong, for `imgrank suspects`.

Wrong labels teach the head the opposite of the owner's taste. A label is suspect when models that
never saw the photo, nor its near-duplicates, find it unlikely. `train` computes that evidence with
`label_check`; the run registry (`runs.py`) stores it in the `oof` table and ranks by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from imgrank.learn.evaluation import stratified_group_folds
from imgrank.learn.head_math import calibrated
from imgrank.learn.logistic import Design, fit_platt, logit

if TYPE_CHECKING:
    from imgrank.learn.recipe import TrainConfig


# Up to this many labels the check also predicts each photo from a fit on all the other labels but its
# near-duplicates (group leave-one-out): one fit a group, about 0.07 s of CPU in all at 50 labels, but
# 0.6 s at 100 (the cost grows as n^4), where train_arrays itself takes about 0.5 s.
LEAVE_ONE_OUT_UP_TO = 60


def label_check(
    design: Design, y: np.ndarray, groups: np.ndarray, first, l2: float, config: TrainConfig
) -> np.ndarray:
    """Calibrated held-out P(delete) per labelled row, to find labels that are likely wrong.

    One fold split leaves each photo's prediction to the luck of which photos shared its fold; with few
    labels that luck decides. So the L2 logistic regression (convex, quick, at the strength
    cross-validation chose) predicts each photo from models that never saw it or its near-duplicates,
    over several splits with different seeds (the first is cross-validation's own, `first`: its folds
    and held-out predictions), and the logits are averaged. Up to `LEAVE_ONE_OUT_UP_TO` labels that
    mean is averaged, half and half, with the logit of a fit on every other label but the photo's
    near-duplicate group (`leave_group_out`): a fold's fit learns from four fifths of the labels, this
    one from all but a few. At 50 labels the two together found +0.028 +- 0.013 of the flipped labels
    on bench_suite's seeds 100-119, more than either alone, but +0.000 +- 0.014 on its seeds 0-19
    (docs/learning.md): cheap, and it lost no taste. Platt scaling on those predictions puts the
    base rate back (the fits weigh the classes equally): a delete label is a priori more likely wrong
    than a keep label when deletes are rare. From 250 labels on, fewer splits (one from 1,000): the single
    split is then steady, and the fits cost more. NaN: a row never held out (a group too big)."""
    folds, p_first = first
    splits = max(1, min(config.check_splits, 1000 // max(len(y), 1)))
    total, seen = np.zeros(len(y)), np.zeros(len(y))
    ok = np.isfinite(p_first)
    total[ok], seen[ok] = logit(p_first[ok]), 1
    for r in range(1, splits):
        fold = stratified_group_folds(y, groups, folds.k, config.seed + 1000 * r).fold
        for f in range(folds.k):
            held = fold == f
            if held.any() and len(np.unique(y[~held])) == 2:
                total[held] += design.logit(design.path(~held, y[~held], (l2,))[0], held)
                seen[held] += 1
    mean_logit = np.where(seen > 0, total / np.maximum(seen, 1), np.nan)
    if len(y) <= LEAVE_ONE_OUT_UP_TO:
        alone = leave_group_out(design, y, groups, folds.fold >= 0, l2)
        both = np.isfinite(mean_logit) & np.isfinite(alone)
        mean_logit[both] = (mean_logit[both] + alone[both]) / 2
    rows = np.isfinite(mean_logit)
    if not rows.any():
        return mean_logit
    return calibrated(mean_logit, fit_platt(mean_logit[rows], y[rows]))


def leave_group_out(
    design: Design, y: np.ndarray, groups: np.ndarray, rows: np.ndarray, l2: float
) -> np.ndarray:
    """Held-out logit of each of `rows` from the regression fit on every label but its near-duplicate
    group (NaN elsewhere, and where the rest hold one class only)."""
    out = np.full(len(y), np.nan)
    for g in np.unique(groups[rows]):
        held = groups == g
        if len(np.unique(y[~held])) == 2:
            out[held & rows] = design.logit(design.path(~held, y[~held], (l2,))[0], held & rows)
    return out


def p_given_label(p_delete, labels) -> np.ndarray:
    """P(given label): p_delete for a delete (label 1), 1 - p_delete for a keep (label 0)."""
    p = np.asarray(p_delete, np.float64)
    return np.where(np.asarray(labels) == 1, p, 1 - p)


def suspect_order(p_delete: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The rows `imgrank suspects` lists, most doubted first: P(given label) ascending, where the
    label is 1 for delete and 0 for keep and P(given label) is p_delete for a delete and 1 - p_delete
    for a keep; ties keep their order, rows without a prediction (NaN) are left out. With calibrated
    held-out predictions and labels flipped at random whatever the photo, the chance that a label is
    wrong falls as P(given label) rises, alike for both labels, so this order is the one by that
    chance. (Thresholds per class, as confident learning ranks, found fewer flips on bench_suite's
    folders: docs/learning.md.)"""
    p_label = p_given_label(p_delete, labels)
    order = np.argsort(p_label, kind="stable")
    return order[np.isfinite(p_label[order])]
