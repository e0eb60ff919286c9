"""The MLP head in torch: build it, fit it with early stopping on held-out AP, read its weights.

torch is imported only inside these functions (it is the `train` extra); the daemon scores heads
with numpy (`head_math.Head`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from imgrank.devices import torch_device
from imgrank.errors import ImgrankError
from imgrank.learn.evaluation import average_precision
from imgrank.learn.logistic import Space, input_space
from imgrank.learn.optim import AdamW

if TYPE_CHECKING:
    from imgrank.learn.recipe import TrainConfig


def require_torch():
    """The torch module, or one clear line saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ImgrankError("training needs torch: pip install 'imgrank[train]'") from None
    return torch


def fit_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: TrainConfig,
    epochs: int,
    x_held: np.ndarray | None = None,
    y_held: np.ndarray | None = None,
    space: Space | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Train the MLP for `epochs` epochs. Returns (numpy weights after the last epoch, the held-out
    rows' P(delete) after each epoch or None). With held-out rows it stops once their AP has not
    improved for the patience; the curve is cut there. Fit in `space` (`input_space`; default: the
    rows standardised)."""
    torch = require_torch()
    torch.manual_seed(config.seed)
    # Small batches are faster on one thread than split over busy cores.
    torch.set_num_threads(config.threads or (1 if len(x_train) < 4096 else os.cpu_count() or 1))
    device = torch_device(config.device)
    space = space or input_space(x_train)

    def prep(x):
        return torch.from_numpy(space(x)).to(device)

    xt, yt = prep(x_train), torch.from_numpy(np.asarray(y_train, np.float32)).to(device)
    net = build_net(x_train.shape[1], config).to(device)
    n_pos = float(yt.sum())
    pos_weight = torch.tensor([(len(yt) - n_pos) / max(n_pos, 1.0)], device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    xh = prep(x_held) if x_held is not None else None
    curve: list[np.ndarray] = []
    best_ap, best_epoch = -1.0, 0
    patience = max(config.patience, config.patience_steps / -(-len(xt) // config.batch_size))
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), config.batch_size):
            idx = perm[i : i + config.batch_size]
            opt.zero_grad()
            loss_fn(net(xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
        if xh is None:
            continue
        net.eval()
        with torch.no_grad():
            curve.append(torch.sigmoid(net(xh).squeeze(1)).cpu().numpy().astype(np.float64))
        ap = average_precision(y_held, curve[-1]) or 0.0
        if ap > best_ap + 1e-6:
            best_ap, best_epoch = ap, epoch
        elif epoch - best_epoch >= patience:
            break
    weights = net_weights(net, space.mean, space.std)
    weights["w0"] = space.fold(weights["w0"])  # the head stays plain standardise-then-network
    return weights, (np.array(curve) if xh is not None else None)


def build_net(width: int, config: TrainConfig):
    """The MLP: Linear-ReLU-Dropout per hidden width, then one Linear to the logit."""
    torch = require_torch()
    layers = []
    for h in config.hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Dropout(config.dropout)]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


def net_weights(net, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """A torch network's weights as a head's numpy arrays (mean, std, then w{i}/b{i} per layer)."""
    import torch

    weights = {"mean": mean, "std": std}
    for i, m in enumerate(x for x in net if isinstance(x, torch.nn.Linear)):
        weights[f"w{i}"] = m.weight.detach().cpu().numpy().copy()
        weights[f"b{i}"] = m.bias.detach().cpu().numpy().copy()
    return weights
