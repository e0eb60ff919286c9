"""Whether the file name and the cheap facts say anything about the labels, by the evidence of every
label at once (the marginal likelihood) rather than by folds.

An L2 logistic regression on standardised columns with prior variance 1 per weight (C = 1) is a
Gaussian-process classifier with the kernel K = Z Zᵀ (+ a constant for the bias). Laplace's
approximation of its log evidence (Rasmussen & Williams, algorithm 3.1, with B = I + W½KW½) is
steady where the folds' choice rests on the 4-20 deletes they hold out: `evidence_by_block` compares
the regression on the image vector, and the one on the columns after it, with the bias alone.
Numpy and scipy.
"""

from __future__ import annotations

import numpy as np

from imgrank.learn.head_math import standardise, standardiser
from imgrank.learn.logistic import class_weights

BIAS_VARIANCE = 10.0  # prior variance of the bias (the regression's intercept is not penalised)
GAIN_ROWS = 400  # labels `prior_gain` weighs two priors on (its cost grows as n^3)


def log_evidence(K: np.ndarray, y: np.ndarray, iters: int = 50) -> float:
    """Laplace's approximation of the log evidence of labels `y` (0/1) under a logistic likelihood
    and the prior f ~ N(0, K), the classes weighed equally (a delete counts keeps/deletes times,
    rescaled so the weights sum to n). Newton's method for the mode (R&W alg. 3.1), halving a step
    that lowers the objective."""
    from scipy.linalg import cho_solve, cholesky

    y = np.asarray(y, int)
    n = len(y)
    c = class_weights(y)
    c = c * n / c.sum()
    t = y.astype(np.float64)
    f = np.zeros(n)
    best = -np.inf
    for _ in range(iters):
        pi = 1 / (1 + np.exp(-np.clip(f, -40, 40)))
        w = c * pi * (1 - pi)
        sw = np.sqrt(w)
        L = cholesky(np.eye(n) + sw[:, None] * K * sw[None, :], lower=True)
        b = w * f + c * (t - pi)
        a = b - sw * cho_solve((L, True), sw * (K @ b))
        f_new = K @ a
        psi = -0.5 * a @ f_new + (c * (t * f_new - np.logaddexp(0, f_new))).sum()
        if psi < best:  # a step too far: halve it
            f_new = (f + f_new) / 2
        step = np.abs(f_new - f).max()
        f, best = f_new, max(psi, best)
        if step < 1e-7:
            break
    pi = 1 / (1 + np.exp(-np.clip(f, -40, 40)))
    sw = np.sqrt(c * pi * (1 - pi))
    L = cholesky(np.eye(n) + sw[:, None] * K * sw[None, :], lower=True)
    a = c * (t - pi)  # at the mode f = K ∇log p(y|f)
    return float(-0.5 * a @ f + (c * (t * f - np.logaddexp(0, f))).sum() - np.log(np.diag(L)).sum())


def _standardised(x: np.ndarray) -> np.ndarray:
    mean, std = standardiser(x)
    return standardise(x, mean, std).astype(np.float64)


def evidence_by_block(x: np.ndarray, y: np.ndarray, width: int) -> tuple[float, float]:
    """How much the labels say each block matters: the log evidence of the regression on the first
    `width` columns (the image vector), and of the one on the columns after them (the file name's
    vector and the cheap facts), each standardised with prior variance 1 a column (C = 1), minus
    that of the bias alone. Below 0 the labels are better explained without those columns, which then
    only add noise to a regression on every feature. On bench_suite's folders the name block's was
    above 0 in most draws of the name taste, and both were below 0 in the few where it was not
    (docs/learning.md)."""
    bias = np.full((len(y), len(y)), BIAS_VARIANCE)
    null = log_evidence(bias, y)
    image, rest = _standardised(x[:, :width]), _standardised(x[:, width:])
    return log_evidence(image @ image.T + bias, y) - null, log_evidence(rest @ rest.T + bias, y) - null


def prior_gain(z: np.ndarray, z_other: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """How much better the labels are explained when the regression's space is `z` than when it is
    `z_other` (the same labelled rows in two spaces, `logistic.Space`, at prior variance 1 a column):
    the difference of their log evidence, on at most GAIN_ROWS of the labels, drawn at random. A
    prior that leans on directions the labels do not follow loses (Occam's razor), one they follow
    gains: on bench_suite's folders, more prior along the directions near-duplicates differ along
    gained in nearly every draw of the quality taste and lost in nearly every draw of the kinds
    taste (docs/learning.md)."""
    rows = np.random.default_rng(seed).permutation(len(y))[:GAIN_ROWS]
    bias = np.full((len(rows), len(rows)), BIAS_VARIANCE)
    a, b = (np.asarray(m[rows], np.float64) for m in (z, z_other))
    return log_evidence(a @ a.T + bias, y[rows]) - log_evidence(b @ b.T + bias, y[rows])
