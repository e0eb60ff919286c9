"""The L2 logistic regression (the baseline, the label check) and the column weights of feature blocks.

Fit by Newton's method with a line search; scored with numpy like any head (`predict`).
"""

from __future__ import annotations

import numpy as np

from imgrank.devices import torch_device
from imgrank.model import Head, standardise, standardiser


def block_scale(widths: tuple[int, ...]) -> np.ndarray:
    """Per-column weight after standardising, so that every block of features has the same total prior
    variance: a column of a block of w columns is multiplied by sqrt(widest / w). Column by column, the
    512 columns of the image and name vectors would hold 512 of 515 shares of the L2 prior, though each
    cheap fact (pixels, shape, bytes) is a judgement of its own and one embedding coordinate means
    little. One share per block lets a few labels lean on the facts (tiny images, screenshots)."""
    widths = tuple(w for w in widths if w > 0)
    widest = max(widths)
    return np.concatenate([np.full(w, np.sqrt(widest / w), np.float32) for w in widths])


def spec_blocks(spec: dict) -> tuple[int, int]:
    """Column widths of a feature spec's leading blocks: the image vector, the name vector. The
    columns after them (metadata, and the prior's features where a head takes them) are the cheap facts."""
    return (spec["image_dim"], spec["name_dim"])


def scaled_standardiser(x_train: np.ndarray, scale: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The training rows' mean and std, the std divided by the column weights (so a head stays plain
    standardise-then-network)."""
    mean, std = standardiser(x_train)
    return (mean, std) if scale is None else (mean, (std / scale).astype(np.float32))


def fit_logistic(
    x_train: np.ndarray,
    y_train: np.ndarray,
    l2: float = 1.0,
    iterations: int = 50,
    start: dict[str, np.ndarray] | None = None,
    device: str = "cpu",
    scale: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The baseline: class-weighted logistic regression with an L2 penalty (l2=1 is scikit-learn's
    C=1), fit by Newton's method (iteratively reweighted least squares): exact in a few steps. torch on
    `device` (on a GPU the products are nearly free): the products in float32, the gradient, the
    sums and the solve in float64. `scale`: column weights (`block_scale`)."""
    from imgrank.train import require_torch  # torch is the `train` extra

    torch = require_torch()
    dev = torch_device(device)
    f64 = torch.float64
    mean, std = scaled_standardiser(x_train, scale)
    z = torch.from_numpy(standardise(x_train, mean, std)).to(dev)
    x1 = torch.cat([z, torch.ones((len(z), 1), device=dev)], dim=1)  # last column: the bias
    x1_64 = x1.to(f64)
    y = torch.from_numpy(np.asarray(y_train, np.float64)).to(dev)
    n_pos = float(y.sum())
    sample_w = torch.where(y == 1, (len(y) - n_pos) / max(n_pos, 1.0), 1.0).to(f64)
    penalty = torch.full((x1.shape[1],), float(l2), dtype=f64, device=dev)
    penalty[-1] = 0.0  # the bias is not penalised
    # a fit of the same rows at another L2 strength is a close start: a few Newton steps from there
    if start is None:
        w = torch.zeros(x1.shape[1], dtype=f64, device=dev)
    else:
        w = torch.from_numpy(np.r_[start["w0"][0], start["b0"]].astype(np.float64)).to(dev)

    def objective(w):  # the class-weighted log loss plus the penalty: what Newton's steps must lower
        logit = (x1 @ w.float()).to(f64)
        return float(
            (sample_w * (torch.nn.functional.softplus(logit) - y * logit)).sum() + (penalty * w * w).sum() / 2
        )

    loss = objective(w)
    for _ in range(iterations):
        p = torch.sigmoid((x1 @ w.float()).to(f64))
        grad = x1_64.T @ (sample_w * (p - y)) + penalty * w
        curvature = (sample_w * p * (1 - p)).float()
        hessian = ((x1 * curvature[:, None]).T @ x1).to(f64) + torch.diag(penalty)
        delta = torch.linalg.solve(hessian, grad)
        # A full step can overshoot where a few photos sit far out (a thumbnail's pixel count): halve
        # it until the objective falls, so the fit converges from any start.
        step = 1.0
        while (new_loss := objective(w - step * delta)) > loss + 1e-12 * abs(loss) and step > 1e-6:
            step /= 2
        w, loss = w - step * delta, new_loss
        if float(delta.abs().max()) * step < 1e-6:
            break
    w = w.cpu().numpy()
    return {"mean": mean, "std": std, "w0": w[None, :-1].astype(np.float32), "b0": w[-1:].astype(np.float32)}


def predict(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Uncalibrated P(delete) with numpy, the way a saved head is scored."""
    return Head(weights, {"n_layers": sum(1 for k in weights if k.startswith("w"))}).predict(x)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p kept off 0 and 1."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))
