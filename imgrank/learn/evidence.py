"""How much each block of features may weigh, chosen by the evidence of the labels (the marginal
likelihood) instead of by folds.

An L2 logistic regression on standardised features whose block b (the image vector, the file name's
vector, the cheap facts) has its own prior variance s_b² is a Gaussian-process classifier with the
kernel K = Σ_b s_b² Z_b Z_bᵀ (+ a constant for the bias). Laplace's approximation of its log
evidence (Rasmussen & Williams, algorithms 3.1 and 5.1, with B = I + W½KW½) uses every label at
once, where a choice by folds rests on the 4-20 deletes they hold out; maximising it over log s_b²
lets a quality taste lean on the image vector alone and a taste the file name tells on the name.
The MAP weights are an L2 regression in the space whose columns are scaled by s_b (`evidence_space`),
so the head, the folds and the label check fit that regression as before (`logistic.Design`).
Numpy, and scipy's L-BFGS-B for the maximisation.
"""

from __future__ import annotations

import numpy as np

from imgrank.learn.head_math import standardise, standardiser
from imgrank.learn.logistic import Space, class_weights

BIAS_VARIANCE = 10.0  # prior variance of the bias (the regression's intercept is not penalised)
LOG_S2 = (np.log(1e-4), np.log(1e2))  # bounds of each block's log prior variance
# Starting points of the maximisation (log s² per block; 0 is the regression with C = 1): the evidence
# can have one hill for the image vector and one for the file name.
STARTS = (0.0, -3.0)


def _mode(K: np.ndarray, y: np.ndarray, c: np.ndarray, f: np.ndarray, iters: int = 50):
    """The Laplace mode of the class-weighted logistic likelihood under the prior N(0, K): Newton's
    method with B = I + W½KW½ (R&W alg. 3.1). Returns f̂, a (f̂ = K a), the Cholesky factor of B,
    W½, π̂ and the log evidence."""
    from scipy.linalg import cho_solve, cholesky

    n = len(y)
    psi_old = -np.inf
    for _ in range(iters):
        pi = 1 / (1 + np.exp(-np.clip(f, -40, 40)))
        w = c * pi * (1 - pi)
        sw = np.sqrt(w)
        L = cholesky(np.eye(n) + sw[:, None] * K * sw[None, :], lower=True)
        b = w * f + c * (y - pi)
        a = b - sw * cho_solve((L, True), sw * (K @ b))
        f_new = K @ a
        loglik = c * (y * f_new - np.logaddexp(0, f_new))
        psi = -0.5 * a @ f_new + loglik.sum()
        if psi < psi_old:  # a step too far: halve it
            f_new = (f + f_new) / 2
        step = np.abs(f_new - f).max()
        f, psi_old = f_new, max(psi, psi_old)
        if step < 1e-7:
            break
    pi = 1 / (1 + np.exp(-np.clip(f, -40, 40)))
    w = c * pi * (1 - pi)
    sw = np.sqrt(w)
    L = cholesky(np.eye(n) + sw[:, None] * K * sw[None, :], lower=True)
    grad = c * (y - pi)
    a = grad  # at the mode f = K ∇log p
    loglik = c * (y * f - np.logaddexp(0, f))
    log_z = -0.5 * a @ f + loglik.sum() - np.log(np.diag(L)).sum()
    return f, a, L, sw, pi, log_z


def log_evidence(
    grams: list[np.ndarray], theta: np.ndarray, y: np.ndarray, c: np.ndarray, f0=None, gradient: bool = True
):
    """Laplace's log evidence at log prior variances `theta` (one per block, kernels `grams`) and its
    gradient (R&W alg. 5.1, the likelihood weighted by `c`); also the mode, to start the next one."""
    from scipy.linalg import solve_triangular

    parts = [np.exp(t) * g for t, g in zip(theta, grams, strict=True)]
    K = sum(parts) + BIAS_VARIANCE
    f, a, L, sw, pi, log_z = _mode(K, y, c, np.zeros(len(y)) if f0 is None else f0)
    if not gradient:
        return log_z, None, f
    d3 = -c * pi * (1 - pi) * (1 - 2 * pi)
    linv_sw = solve_triangular(L, np.diag(sw), lower=True)
    R = linv_sw.T @ linv_sw  # W½ B⁻¹ W½
    C = solve_triangular(L, sw[:, None] * K, lower=True)
    s2 = 0.5 * (np.diag(K) - (C * C).sum(axis=0)) * d3  # GPML's code; the book's alg. 5.1 has its sign wrong
    grad = np.empty(len(theta))
    for j, Kj in enumerate(parts):
        s1 = 0.5 * a @ Kj @ a - 0.5 * (R * Kj).sum()
        b = Kj @ a
        s3 = b - K @ (R @ b)
        grad[j] = s1 + s2 @ s3
    return log_z, grad, f


def evidence_scales(z: np.ndarray, y: np.ndarray, widths: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """Each block's prior variance s_b² (standardised columns `z`, blocks of `widths` columns, in
    order) by the largest Laplace evidence, the classes weighed equally (a delete counts
    keeps/deletes times, rescaled so the weights sum to n). Returns (s², the best log evidence)."""
    from scipy.optimize import minimize

    y = np.asarray(y, float)
    n = len(y)
    c = class_weights(y.astype(int))
    c = c * n / c.sum()
    z = np.asarray(z, np.float64)
    grams, start = [], 0
    for w in widths:
        block = z[:, start : start + w]
        grams.append(block @ block.T)
        start += w
    state = {"f": None}

    def objective(theta):
        value, grad, f = log_evidence(grams, theta, y, c, state["f"])
        state["f"] = f
        return -value, -grad

    best = None
    for s in STARTS:
        state["f"] = None
        found = minimize(
            objective,
            np.full(len(widths), s),
            jac=True,
            method="L-BFGS-B",
            bounds=[LOG_S2] * len(widths),
            options={"maxiter": 40},
        )
        if best is None or found.fun < best.fun:
            best = found
    return np.exp(best.x), float(-best.fun)


def evidence_space(x: np.ndarray, y: np.ndarray, blocks: tuple[int, ...]) -> tuple[Space, np.ndarray]:
    """The space an L2 regression at l2 = 1 (`logistic.Design`, classes weighed as `class_weights`
    weighs them) fits the evidence's MAP weights in: the features standardised, each block's columns
    times s_b (`evidence_scales`). The leading `blocks` are the image and name vectors; the columns
    after them (the cheap facts, the prior's features) are one more block. Returns (space, s²)."""
    mean, std = standardiser(x)
    z = standardise(x, mean, std)
    widths = tuple(w for w in (*blocks, x.shape[1] - sum(blocks)) if w > 0)
    s2, _ = evidence_scales(z, y, widths)
    # The evidence weighs the classes to sum to n; the regression weighs a keep once: the same MAP
    # with the prior variance scaled by the ratio of the two weightings.
    y = np.asarray(y, int)
    ratio = len(y) / class_weights(y).sum()
    scale = np.concatenate([np.full(w, np.sqrt(v * ratio)) for w, v in zip(widths, s2, strict=True)])
    basis = np.diag(scale).astype(np.float32)
    inverse = np.diag(1 / scale).astype(np.float32)
    return Space(mean, std, basis, inverse), s2


def evidence_gap(x: np.ndarray, y: np.ndarray, width: int) -> float:
    """Log evidence of the regression on every standardised column minus that of the regression on
    the first `width` columns alone (the image vector), each column's prior variance 1 (C = 1), the
    classes weighed equally: how much the labels say the other columns (the file name, the facts)
    matter. Positive: every feature."""
    y = np.asarray(y, int)
    mean, std = standardiser(x)
    z = standardise(x, mean, std).astype(np.float64)
    c = class_weights(y)
    c = c * len(y) / c.sum()
    image = z[:, :width] @ z[:, :width].T
    rest = z[:, width:] @ z[:, width:].T
    t = np.zeros(1)
    log_all = log_evidence([image + rest], t, y.astype(float), c, gradient=False)[0]
    log_image = log_evidence([image], t, y.astype(float), c, gradient=False)[0]
    return float(log_all - log_image)


def _dev_gaps(x, y, width):
    """Development only: the gap at several prior scalings."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, int)
    mean, std = standardiser(x)
    z = standardise(x, mean, std).astype(np.float64)
    c = class_weights(y)
    c = c * len(y) / c.sum()
    image = z[:, :width] @ z[:, :width].T
    rest = z[:, width:] @ z[:, width:].T
    yf = y.astype(float)

    def ev(g, t):
        return log_evidence([g], np.array([t]), yf, c, gradient=False)[0]

    out = {}
    d = x.shape[1]
    out["eq"] = ev(image + rest, np.log(width / d)) - ev(image, 0.0)
    opt = {}
    for name, g in (("all", image + rest), ("image", image)):
        r = minimize_scalar(lambda t: -ev(g, t), bounds=(-9, 3), method="bounded", options={"xatol": 0.05})
        opt[name] = (-r.fun, r.x)
    out["opt"] = opt["all"][0] - opt["image"][0]
    out["t_all"], out["t_image"] = opt["all"][1], opt["image"][1]
    null = ev(np.zeros_like(rest), 0.0)
    out["name1"] = ev(rest, 0.0) - null
    r = minimize_scalar(lambda t: -ev(rest, t), bounds=(-9, 3), method="bounded", options={"xatol": 0.05})
    out["name_opt"] = -r.fun - null
    out["image1"] = ev(image, 0.0) - null
    return out
