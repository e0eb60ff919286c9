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


def label_check(
    design: Design, y: np.ndarray, groups: np.ndarray, first, l2: float, config: TrainConfig
) -> np.ndarray:
    """Calibrated held-out P(delete) per labelled row, to find labels that are likely wrong.

    One fold split leaves each photo's prediction to the luck of which photos shared its fold; with few
    labels that luck decides. So the L2 logistic regression (convex, quick, at the strength
    cross-validation chose) predicts each photo from models that never saw it or its near-duplicates,
    over several splits with different seeds (the first is cross-validation's own, `first`: its folds
    and held-out predictions), and the logits are averaged. Platt scaling on those predictions puts the
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
    rows = seen > 0
    if not rows.any():
        return mean_logit
    return calibrated(mean_logit, fit_platt(mean_logit[rows], y[rows]))
