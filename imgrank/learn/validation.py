"""Cross-validation: the folds a run is judged on, both recipes held out on them, and the choices
they make (the L2 strength, MLP or logistic regression, the prior's features or not).

The folds come from the labels, the image vectors and the seed alone (`split`), so every feature
set a run compares is judged on the same folds, drawn once. Numpy, but for the fits (torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imgrank.errors import ImgrankError
from imgrank.learn.evaluation import (
    Folds,
    average_precision,
    evaluate,
    near_duplicate_groups,
    stratified_group_folds,
)
from imgrank.learn.evidence import evidence_by_block, prior_gain
from imgrank.learn.head_math import with_contrast
from imgrank.learn.logistic import Design, Space, input_space, regression_space, with_differ
from imgrank.learn.mlp import fit_mlp
from imgrank.learn.recipe import HEAD_FEATURES, HELPS_BY

if TYPE_CHECKING:
    from imgrank.learn.recipe import TrainConfig


def check_enough(y: np.ndarray, config: TrainConfig) -> None:
    """One clear line when there are too few labels of a class."""
    n_del, n_keep = int(y.sum()), int(len(y) - y.sum())
    need = max(config.min_per_class, 2)
    short = [(need - n, name) for n, name in ((n_del, "delete"), (n_keep, "keep")) if n < need]
    if short:
        more = " and ".join(f"{k} more as {name}" for k, name in short)
        raise ImgrankError(
            f"too few labels to train: have {n_del} delete and {n_keep} keep; label at least {more} "
            f"(need {need} of each; `imgrank relabel delete|keep PATH...`)"
        )


# Pooled held-out AP within which a stronger L2 penalty counts as ranking as well as the best, times
# 1 / sqrt(held-out deletes): 0.019 with 10 deletes, 0.006 with 100, 0.0008 with 5,000
L2_TIE = 0.06


def cross_validate_logistic(design: Design, y: np.ndarray, fold: np.ndarray, k: int, l2s) -> dict:
    """Held-out P(delete) of the L2 logistic regression for every row in a fold, at the strongest L2
    penalty whose held-out predictions, pooled over the folds, rank as well as the best (AP within
    L2_TIE / sqrt(held-out deletes)). The mean of the folds' APs, each fold holding a handful of
    deletes, chose l2 = 1000 on a bench_suite folder (500 labels), and a head that ranked new photos
    at 0.62 AP; pooled, they choose l2 = 100: 0.87. With a handful of deletes
    the pooled APs of every strength lie within noise of each other, and the best of them is luck: on
    a name-taste draw of 30 labels they spanned 0.361-0.376, the best (l2 = 1) ranked new photos at
    0.52 AP and l2 = 10,000 at 0.95 (docs/learning.md). Each fold fits the whole L2 path, strongest
    penalty first (`Design.path`)."""
    l2s = sorted(l2s, reverse=True)
    base = {l2: np.full(len(y), np.nan) for l2 in l2s}
    for f in range(k):
        held = fold == f
        for l2, fit in zip(l2s, design.path(~held, y[~held], l2s), strict=True):
            base[l2][held] = design.predict(fit, held)
    rows = fold >= 0
    pooled = {l2: average_precision(y[rows], base[l2][rows]) or 0.0 for l2 in l2s}
    tie = L2_TIE / np.sqrt(max(int(y[rows].sum()), 1))
    l2 = next(c for c in l2s if pooled[c] >= max(pooled.values()) - tie)  # l2s: strongest first
    return {"p": base[l2], "l2": l2}


def learning_curve(
    design: Design, y: np.ndarray, fold: np.ndarray, k: int, l2: float, full: np.ndarray, seed: int = 0
) -> dict:
    """Held-out AP of the regression on every feature when each fold learns from half of its training
    rows (drawn at random within each class), beside its AP from all of them (`full`: its held-out
    P(delete)): what the last doubling of labels bought, so what the next one may buy."""
    rng = np.random.default_rng(seed)
    half_p = np.full(len(y), np.nan)
    for f in range(k):
        train = np.flatnonzero(fold != f)
        half = np.concatenate(
            [rng.permutation(train[y[train] == c])[: max(2, (y[train] == c).sum() // 2)] for c in (0, 1)]
        )
        if len(np.unique(y[half])) == 2:
            held = fold == f
            half_p[held] = design.predict(design.path(half, y[half], (l2,))[0], held)
    rows = (fold >= 0) & np.isfinite(half_p)
    return {
        "labels_half": int(len(y) // 2),
        "ap_half": average_precision(y[rows], half_p[rows]),
        "labels_all": len(y),
        "ap_all": average_precision(y[rows], full[rows]),
    }


def cross_validate_mlp(
    x: np.ndarray, y: np.ndarray, fold: np.ndarray, k: int, config: TrainConfig, log, space: Space
) -> dict:
    """Held-out P(delete) of the MLP for every row in a fold, at the epoch count with the best pooled
    held-out AP."""
    curves: list[tuple[np.ndarray, np.ndarray]] = []
    for f in range(k):
        held = fold == f
        log(f"cross-validation fold {f + 1}/{k}: {int(held.sum())} photos held out")
        _, curve = fit_mlp(x[~held], y[~held], config, config.max_epochs, x[held], y[held], space)
        curves.append((held, curve))
    longest = max(len(c) for _, c in curves)
    # A fold that stopped early keeps its last predictions for the later epochs.
    pooled = np.full((longest, len(y)), np.nan)
    for held, curve in curves:
        pooled[:, held] = np.concatenate([curve, np.repeat(curve[-1:], longest - len(curve), axis=0)])
    rows = fold >= 0
    aps = [average_precision(y[rows], pooled[e, rows]) or 0.0 for e in range(longest)]
    best = int(np.argmax(aps))
    return {"mlp": pooled[best], "epochs": best + 1, "curve_ap": aps}


# Pooled held-out AP by which the MLP must beat the regression to replace it
SWITCH_MARGIN = 0.01


def fold_aps(y: np.ndarray, fold: np.ndarray, k: int, p: np.ndarray) -> np.ndarray:
    """Held-out AP of each of the k folds (NaN for a fold without a delete)."""
    return np.array([average_precision(y[fold == f], p[fold == f]) or np.nan for f in range(k)])


def standard_error(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def beats_fold_by_fold(y: np.ndarray, fold: np.ndarray, k: int, p: np.ndarray, base: np.ndarray) -> bool:
    """Whether held-out predictions `p` rank better than `base` fold by fold by more than one standard
    error of their AP difference (folds without a delete left out)."""
    diff = fold_aps(y, fold, k, p) - fold_aps(y, fold, k, base)
    return bool(np.isfinite(diff).any() and np.nanmean(diff) > standard_error(diff))


def mlp_beats_baseline(y: np.ndarray, fold: np.ndarray, k: int, cv: dict) -> bool:
    """The MLP only when it ranks the held-out photos better by SWITCH_MARGIN of pooled AP and beats
    the logistic regression fold by fold by more than one standard error of their AP difference: the
    simpler head unless the data show the MLP is better, by enough to matter. On a benchmark folder
    with 7 deletes among 60 labels, the MLP won the pooled AP by luck (0.63 against 0.48) and ranked
    new photos at 0.54 where the logistic regression gives 0.66; on bench_train's 25,000 labels it won
    by 0.0006 AP, and its refit doubled the CPU time of `train` and made every score an MLP's."""
    rows = fold >= 0
    pooled = (average_precision(y[rows], cv["mlp"][rows]) or 0.0) - (
        average_precision(y[rows], cv["baseline"][rows]) or 0.0
    )
    return pooled >= SWITCH_MARGIN and beats_fold_by_fold(y, fold, k, cv["mlp"], cv["baseline"])


@dataclass
class Split:
    """The near-duplicate groups and the folds: drawn from the labels, the image vectors and the seed
    alone, so every feature set a run compares (with and without the prior's features) is validated
    on the same folds, and they are drawn once."""

    groups: np.ndarray
    folds: Folds

    @property
    def held(self) -> np.ndarray:
        """Rows in some fold (the rest: groups too big to hold out, always in training)."""
        return self.folds.fold >= 0


def split(y: np.ndarray, image: np.ndarray, config: TrainConfig) -> Split:
    """Groups and stratified group folds, or one clear line when there are too few labels."""
    check_enough(y, config)
    groups = near_duplicate_groups(image, config.near_dup, config.max_group)
    k = max(2, min(config.cv, int(y.sum()), int(len(y) - y.sum())))
    if len(y) >= config.two_folds_from:
        k = 2
    folds = stratified_group_folds(y, groups, k, config.seed)
    held = folds.fold >= 0
    for label, name in ((1, "delete"), (0, "keep")):
        if not (y[held] == label).any():
            n, g = int((y == label).sum()), len(np.unique(groups[y == label]))
            raise ImgrankError(
                f"too few distinct {name} photos to hold some out for validation: the {n} you marked "
                f"{name} are {g} group{'s' if g != 1 else ''} of near-duplicates (`imgrank dupes` shows "
                f"them), and a group is held out whole or not at all; label as {name} some photos "
                "unlike these"
            )
    return Split(groups, folds)


@dataclass
class Validation:
    """One feature set cross-validated on the split's folds: the regressions tried (`validate_logistic`),
    the held-out predictions of the one chosen and of the MLP (`cross_validate_mlp`), the recipe they
    chose, and the held-out metrics."""

    x: np.ndarray
    space: Space
    design: Design  # the regression on every feature
    cv: dict
    metrics: dict
    recipe: str = "logistic"
    mlp_space: Space | None = None  # the MLP's: block-weighted, prior shaped by the library
    centroids: np.ndarray | None = None  # x's last columns are `with_contrast`'s with these


# Held-out deletes below which the evidence of every label asks whether the file name and the facts
# say anything at all (`evidence.evidence_by_block`): with more, the folds choose better (on
# bench_suite's kinds taste at 100-200 labels, the evidence's choice lost up to 0.04 AP).
EVIDENCE_DELETES = 15
EVIDENCE_L2 = 1.0  # the prior variance 1 a column `evidence_by_block` judges the blocks at


def validate_logistic(
    x: np.ndarray,
    y: np.ndarray,
    parts: Split,
    config: TrainConfig,
    blocks: tuple[int, ...] | None = None,
    library: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    differ: np.ndarray | None = None,
) -> Validation:
    """The quick half of the validation: the L2 logistic regression on every feature (in the space
    `regression_space` makes with the folder's own photos), cross-validated on the split's folds at
    the L2 strength they choose; with fewer than EVIDENCE_DELETES held-out deletes, at the one the
    evidence of every label judged (C = 1) when it says the file name and the facts explain nothing.

    With `centroids` (`contrast.centroids`), every feature and then how each photo differs from the
    photos like it (`with_contrast`), with more prior along `differ` (`directions.differences`).
    From EVIDENCE_DELETES held-out deletes the same regression without that block is validated on
    the same folds too, and it is the head only when its pooled held-out AP is higher by more than
    the L2 strengths' tie (a taste by kind, which the block's columns only add noise to: on
    bench_suite, kinds at 100-200 labels 0.014 behind the pipeline with the block always,
    0.004-0.006 with the choice)."""
    fold, k, held = parts.folds.fold, parts.folds.k, parts.held
    deletes = int(y[held].sum())
    evidence, chosen_by = None, "folds"
    l2s = config.l2_choices
    # The labels are better explained without the file name and the facts than with them, and better
    # by the image vector: a quality direction, which a weak penalty (C = 1) learns and the strong one
    # a handful of held-out deletes tends to choose does not (bench_suite's quality and image-only
    # tastes at 20-50 labels). The names and facts stay: kept to their few directions they cost
    # little, and when the evidence is wrong (a kinds or name taste whose few deletes neither block
    # explains) they are what ranks. The image regression alone at C = 1 in their place lost those
    # draws: name at 20 labels -0.023 and kinds at 20 -0.019 against the pipeline (docs/learning.md).
    if blocks and 0 < blocks[0] < x.shape[1] and deletes < EVIDENCE_DELETES:
        evidence = evidence_by_block(x, y, blocks[0])
        if evidence[1] < 0 and evidence[0] > evidence[1]:
            l2s, chosen_by = (EVIDENCE_L2,), "evidence"
    tried = [centroids] if centroids is None or deletes < EVIDENCE_DELETES else [centroids, None]
    spaces = [_features(x, config, blocks, library, c, differ) for c in tried]
    gain = None
    if centroids is not None and differ is not None and not config.balance_blocks:
        # more prior along them only if the labels say so: below 0 they do not follow them (a taste
        # by kind), and the boost would only add noise (on bench_suite, the kinds taste at 20-30
        # labels lost up to 0.02 of AP with it always on)
        xc, space = spaces[0]
        plain = with_differ(space, centroids.shape[1], None)  # the block is image_dim wide
        gain = prior_gain(space(xc), plain(xc), y, config.seed)
        if gain <= 0:
            differ, spaces[0] = None, (xc, plain)
    fits = [_validate_space(xs, space, y, fold, k, l2s) for xs, space in spaces]
    ap = [average_precision(y[held], f[3]["p"][held]) or 0.0 for f in fits]
    tie = L2_TIE / np.sqrt(max(deletes, 1))
    chosen = 1 if len(fits) > 1 and ap[1] > ap[0] + tie else 0
    (x, space, design, found), kept = fits[chosen], tried[chosen]
    cv = {"baseline": found["p"], "l2": found["l2"]}
    baseline = {
        **evaluate(y[held], cv["baseline"][held]),
        "l2": cv["l2"],
        "chosen_by": chosen_by,
        "evidence": None
        if evidence is None
        else {"image": round(evidence[0], 3), "names": round(evidence[1], 3)},
        "contrast": None if kept is None else len(kept),
        "differ": None if kept is None or differ is None else differ.shape[1],
        "differ_gain": None if gain is None else round(gain, 2),
    }
    if len(ap) > 1:
        baseline["contrast_ap"] = {"with": round(ap[0], 4), "without": round(ap[1], 4)}
    return Validation(x, space, design, cv, {"baseline": baseline}, centroids=kept)


def _features(x, config, blocks, library, centroids, differ) -> tuple[np.ndarray, Space]:
    """The features the regression sees (`x`, then how each photo differs from its cluster's centre
    when `centroids` is given) and the space it is fit in (with more prior along `differ`)."""
    width = x.shape[1]
    if centroids is not None:
        x = with_contrast(x, centroids)
    if config.balance_blocks:
        return x, input_space(x, blocks, library)
    return x, regression_space(x, blocks, library, contrast=x.shape[1] - width, differ=differ)


def _validate_space(x, space, y, fold, k, l2s):
    """(features, space, design, the folds' held-out predictions and strength) of the regression on
    `x` in `space`."""
    design = Design(x, space)
    return x, space, design, cross_validate_logistic(design, y, fold, k, l2s)


def refit_logistic(v: Validation, y: np.ndarray) -> dict[str, np.ndarray]:
    """The regression refit on every label at its chosen strength, as a head."""
    return v.design.weights(v.design.path(np.arange(len(y)), y, (v.cv["l2"],))[0])


def mlp_offered(y: np.ndarray, config: TrainConfig) -> bool:
    """Whether the MLP is cross-validated at all: only with many labels and many deletes. On
    bench_suite's folders (up to 500 labels) the regression ranked new photos at least as well, and
    an MLP chosen by its folds on a few dozen deletes was chosen by luck (issue 23: 13 deletes, 0.11
    of held-out AP lost); the MLP's folds also cost seconds where the regression's cost milliseconds."""
    return len(y) >= config.mlp_from and int(y.sum()) >= config.mlp_min_deletes


def validate_mlp(
    v: Validation,
    y: np.ndarray,
    parts: Split,
    config: TrainConfig,
    log,
    blocks: tuple[int, ...] | None = None,
    library: np.ndarray | None = None,
) -> Validation:
    """The other half, with many labels (`mlp_offered`): the MLP on the same folds, and the recipe
    (`mlp_beats_baseline`). With fewer, the regression is the head and the MLP is not tried."""
    folds, held = parts.folds, parts.held
    if mlp_offered(y, config):
        # the space the MLP was measured in before the regression's default became the plain one
        v.mlp_space = input_space(v.x, blocks, library)
        v.cv |= cross_validate_mlp(v.x, y, folds.fold, folds.k, config, log, v.mlp_space)
        v.metrics = {"mlp": evaluate(y[held], v.cv["mlp"][held]), **v.metrics}
        v.recipe = "mlp" if mlp_beats_baseline(y, folds.fold, folds.k, v.cv) else "logistic"
    else:
        v.metrics = {
            "mlp": {
                "tried": False,
                "from_labels": config.mlp_from,
                "from_deletes": config.mlp_min_deletes,
            },
            **v.metrics,
        }
    v.metrics["active"] = {**v.metrics["mlp" if v.recipe == "mlp" else "baseline"], "recipe": v.recipe}
    return v


def offer_prior(
    fit: Callable[[np.ndarray], Validation],
    x: np.ndarray,
    extra: np.ndarray | None,
    log: Callable[[str], None],
    reason: str | None,
) -> tuple[Validation, dict]:
    """The features without and with the prior's (`extra`), validated by the L2 logistic regression on
    the same folds; the prior's are kept only if they raise its held-out AP by recipe.HELPS_BY or more.
    Returns (the chosen feature set's validation, what was compared: metrics["prior_features"]).
    The quick recipe decides, so the costly one (the MLP's folds) runs once, on the set kept."""

    without = fit(x)
    if extra is None:
        return without, {"tried": False, "reason": reason or "not offered"}
    log("the same folds again, with the prior's features")
    with_prior = fit(np.hstack([x, extra]).astype(np.float32))
    ap_with, ap_without = with_prior.metrics["baseline"]["ap"], without.metrics["baseline"]["ap"]
    helps = (ap_with or 0.0) >= (ap_without or 0.0) + HELPS_BY
    compared = {
        "tried": True,
        "used": helps,
        "ap_with": ap_with,
        "ap_without": ap_without,
        "needed": HELPS_BY,
        "by": "logistic",
        "features": list(HEAD_FEATURES),
    }
    return (with_prior if helps else without), compared
