"""Train the head: the config and the torch recipe.

Cross-validation over near-duplicate groups chooses the recipe (how many epochs, and whether the
MLP beats the L2 logistic regression); the head that scores the folder is then refit on ALL
labels with that recipe, and calibrated on the held-out predictions. Metrics, groups and folds
are in `evaluation.py` (numpy); the run bookkeeping is in `runs.py`. torch is imported only
inside the functions that train (it is the `train` extra).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from imgrank.devices import torch_device
from imgrank.errors import ImgrankError
from imgrank.evaluation import (
    MAX_GROUP,
    NEAR_DUP,
    Folds,
    average_precision,
    dominated_by_one_group,
    evaluate,
    near_duplicate_groups,
    stratified_group_folds,
)
from imgrank.logistic import Space, fit_logistic, input_space, predict, spec_blocks
from imgrank.logistic import logit as _logit
from imgrank.model import fit_platt
from imgrank.optim import AdamW
from imgrank.suspects import label_check


@dataclass
class TrainConfig:
    """Every knob of a training run, with its default. The head stores it, so a run can be repeated."""

    hidden: tuple[int, ...] = (256,)  # hidden layer widths of the MLP; () is logistic regression
    dropout: float = 0.2
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 5  # epochs without a better held-out AP before a fold stops...
    patience_steps: int = 100  # ...and at least this many minibatch steps (small data: more epochs)
    cv: int = 5  # folds that choose the recipe and give the held-out metrics (fewer with few deletes)
    # From this many labels on, 2 folds: each still learns from thousands of photos, and the whole
    # recipe costs about a quarter (25,000 labels: 9 s instead of 41 s on two cores).
    two_folds_from: int = 5000
    l2_choices: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)  # the baseline's L2 strengths to try
    near_dup: float = NEAR_DUP  # cosine similarity from which two photos can be the same shot
    max_group: int = MAX_GROUP  # most photos in one near-duplicate group
    use_name: bool = True  # file-name embedding as features
    use_meta: bool = True  # log pixel count, aspect ratio, file size
    use_prior: bool = True  # offer the prior's features; kept only if they raise the held-out AP
    # Each block of features (image vector, name vector, the cheap facts) gets the same share of the L2
    # prior, not one share per column: see `block_scale`.
    balance_blocks: bool = True
    check_splits: int = 5  # fold splits averaged for `suspects` (fewer from 500 labels on: see label_check)
    min_per_class: int = 10
    worse_margin: float = 0.02  # a new head whose AP is this much below the active one's is not activated
    force: bool = False  # activate anyway
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["l2_choices"] = list(self.l2_choices)
        return d


# --- training (torch) ---


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


@dataclass
class TrainResult:
    """The refit head, the recipe validation chose, and the held-out evidence for it."""

    weights: dict[str, np.ndarray]
    recipe: str  # "mlp" or "logistic": what the active head is
    epochs: int  # epochs of the refit (0 for logistic)
    calibration: dict
    metrics: dict  # held-out metrics: "mlp", "baseline", and "active" (the chosen recipe's)
    counts: dict
    oof: np.ndarray  # held-out P(delete) of the chosen recipe per labelled row (NaN: never held out)
    check: np.ndarray  # calibrated held-out P(delete) to check labels (`label_check`; NaN: never held out)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


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


def cross_validate_logistic(
    x: np.ndarray, y: np.ndarray, fold: np.ndarray, k: int, config: TrainConfig, space: Space
) -> dict:
    """Held-out P(delete) of the L2 logistic regression for every row in a fold, at the L2 strength
    the folds choose: the strongest within one standard error of the best (`within_one_se`)."""
    base = {l2: np.full(len(y), np.nan) for l2 in config.l2_choices}
    for f in range(k):
        held = fold == f
        fitted = None
        for l2 in sorted(config.l2_choices, reverse=True):  # strongest penalty first: the easiest fit
            fitted = fit_logistic(x[~held], y[~held], l2, start=fitted, device=config.device, space=space)
            base[l2][held] = predict(fitted, x[held])
    l2 = max(within_one_se({c: fold_aps(y, fold, k, base[c]) for c in config.l2_choices}))
    return {"baseline": base[l2], "l2": l2}


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


def fold_aps(y: np.ndarray, fold: np.ndarray, k: int, p: np.ndarray) -> np.ndarray:
    """Held-out AP of each of the k folds (NaN for a fold without a delete)."""
    return np.array([average_precision(y[fold == f], p[fold == f]) or np.nan for f in range(k)])


def standard_error(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def within_one_se(scores: dict) -> list:
    """The choices whose mean fold AP is within one standard error of the best choice's. With few
    labels each fold holds a handful of deletes, and the best-looking choice is often best by luck;
    the simplest choice within one standard error of it ranks new photos better (the one-standard-
    error rule, as glmnet's lambda.1se). Measured on bench_learn's folders, 6 seeds: the L2 strength
    picked by the highest pooled AP lost 0.01-0.05 of held-out AP to the strongest penalty tried."""
    means = {c: np.nanmean(s) for c, s in scores.items()}
    best = max(means, key=lambda c: means[c])
    bar = means[best] - standard_error(scores[best])
    return [c for c in scores if means[c] >= bar]


def mlp_beats_baseline(y: np.ndarray, fold: np.ndarray, k: int, cv: dict) -> bool:
    """The MLP only when it beats the logistic regression by more than one standard error of their
    fold-by-fold AP difference: the simpler head unless the data show the MLP is better. On a
    benchmark folder with 7 deletes among 60 labels, the MLP won the pooled AP by luck (0.63 against
    0.48) and ranked new photos at 0.54 where the logistic regression gives 0.66."""
    diff = fold_aps(y, fold, k, cv["mlp"]) - fold_aps(y, fold, k, cv["baseline"])
    return bool(np.nanmean(diff) > standard_error(diff)) if np.isfinite(diff).any() else False


@dataclass
class Split:
    """The near-duplicate groups and the folds: drawn from the labels, the image vectors and the seed
    alone, so every feature set a run compares (with and without the prior's features) is validated
    on the same folds, and they are drawn once."""

    groups: np.ndarray
    folds: Folds
    held: np.ndarray  # rows in some fold (the rest: groups too big to hold out)


def split(y: np.ndarray, image: np.ndarray, config: TrainConfig) -> Split:
    """Groups and stratified group folds, or one clear line when there are too few labels."""
    check_enough(y, config)
    groups = near_duplicate_groups(image, config.near_dup, config.max_group)
    k = max(2, min(config.cv, int(y.sum()), int(len(y) - y.sum())))
    if len(y) >= config.two_folds_from:
        k = 2
    folds = stratified_group_folds(y, groups, k, config.seed)
    held = folds.fold >= 0
    if y[held].sum() == 0 or (1 - y[held]).sum() == 0:
        raise ImgrankError(
            "too few distinct delete photos to hold some out for validation: label more as delete"
        )
    return Split(groups, folds, held)


@dataclass
class Validation:
    """One feature set cross-validated on the split's folds: the space it is fit in, the held-out
    predictions (`cross_validate_logistic`, then `cross_validate_mlp`), the recipe they chose, and
    the held-out metrics."""

    x: np.ndarray
    space: Space
    cv: dict
    metrics: dict
    recipe: str = "logistic"


def validate_logistic(
    x: np.ndarray,
    y: np.ndarray,
    parts: Split,
    config: TrainConfig,
    blocks: tuple[int, ...] | None = None,
    library: np.ndarray | None = None,
) -> Validation:
    """The quick half of the validation: the L2 logistic regression on the split's folds."""
    space = input_space(x, blocks if config.balance_blocks else None, library)
    cv = cross_validate_logistic(x, y, parts.folds.fold, parts.folds.k, config, space)
    baseline = {**evaluate(y[parts.held], cv["baseline"][parts.held]), "l2": cv["l2"]}
    return Validation(x, space, cv, {"baseline": baseline})


def validate_mlp(v: Validation, y: np.ndarray, parts: Split, config: TrainConfig, log) -> Validation:
    """The other half: the MLP on the same folds, and the recipe (`mlp_beats_baseline`)."""
    folds, held = parts.folds, parts.held
    v.cv |= cross_validate_mlp(v.x, y, folds.fold, folds.k, config, log, v.space)
    v.metrics = {"mlp": evaluate(y[held], v.cv["mlp"][held]), **v.metrics}
    v.recipe = "mlp" if mlp_beats_baseline(y, folds.fold, folds.k, v.cv) else "logistic"
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
    the same folds; the prior's are kept only if they raise its held-out AP by prior.HELPS_BY or more.
    Returns (the chosen feature set's validation, what was compared: metrics["prior_features"]).
    The quick recipe decides, so the costly one (the MLP's folds) runs once, on the set kept."""
    from imgrank.prior import HEAD_FEATURES, HELPS_BY

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


def finish(
    y: np.ndarray,
    parts: Split,
    chosen: Validation,
    config: TrainConfig,
    log: Callable[[str], None] = lambda m: None,
    names: list[str] | None = None,
    started: float | None = None,
) -> TrainResult:
    """The chosen recipe refit on every row, calibrated on its held-out predictions, and the label
    check (`label_check`)."""
    x, space, cv, recipe, held = chosen.x, chosen.space, chosen.cv, chosen.recipe, parts.held
    folds, groups = parts.folds, parts.groups
    log(f"refitting the {'MLP' if recipe == 'mlp' else 'logistic regression'} on all {len(y)} labels")
    if recipe == "mlp":
        weights, _ = fit_mlp(x, y, config, cv["epochs"], space=space)
    else:
        weights = fit_logistic(x, y, cv["l2"], device=config.device, space=space)
    oof = cv["mlp"] if recipe == "mlp" else cv["baseline"]
    calibration = fit_platt(_logit(oof[held]), y[held])
    # groups kept in training are named in counts["too_big"] instead
    warnings = [w for w in folds.warnings if "too big to hold out" not in w]
    dominated = dominated_by_one_group(y, groups, held)
    if dominated:
        warnings.append(dominated)
    counts = {
        "keep": int((y == 0).sum()),
        "delete": int(y.sum()),
        "trained_on": len(y),
        "held_out": {"keep": int((y[held] == 0).sum()), "delete": int(y[held].sum())},
        "folds": folds.k,
        "groups": int(len(np.unique(groups))),
        "too_big": [
            {
                "size": int((groups == g).sum()),
                "example": names[int(np.argmax(groups == g))] if names else None,
            }
            for g in folds.too_big
        ],
    }
    return TrainResult(
        weights,
        recipe,
        cv["epochs"] if recipe == "mlp" else 0,
        calibration,
        chosen.metrics,
        counts,
        np.where(held, oof, np.nan),
        label_check(x, y, groups, (folds, cv["baseline"]), cv["l2"], config, space),
        warnings,
        time.time() - (started or time.time()),
    )


def train_arrays(
    x: np.ndarray,
    y: np.ndarray,
    image: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] = lambda m: None,
    names: list[str] | None = None,
    blocks: tuple[int, ...] | None = None,
    library: np.ndarray | None = None,
    extra: np.ndarray | None = None,
    extra_reason: str | None = None,
) -> TrainResult:
    """The whole recipe on arrays: near-duplicate groups, stratified group folds, cross-validated
    choice of recipe and epochs, then the chosen recipe refit on every row and calibrated.
    `blocks`: the column widths of the leading feature blocks (`spec_blocks`: image vector, name
    vector); the columns after them are one more block, the cheap facts. None: no block weights.
    `library`: those leading blocks for a sample of the folder's photos (`model.library_sample`),
    which shape the L2 prior (`input_space`). `extra`: the prior's features, offered as more
    columns and kept only if validation shows they help (`offer_prior`; the head has them when
    metrics["prior_features"]["used"]); `extra_reason`: why there are none, when None."""
    started = time.time()
    y = np.asarray(y, int)
    parts = split(y, image, config)
    fit = partial(validate_logistic, y=y, parts=parts, config=config, blocks=blocks, library=library)
    chosen, compared = offer_prior(fit, x, extra, log, extra_reason)
    chosen = validate_mlp(chosen, y, parts, config, log)
    chosen.metrics["prior_features"] = compared
    return finish(y, parts, chosen, config, log, names, started)


def head_meta(spec: dict, config: TrainConfig, result: TrainResult) -> dict:
    """The metadata a trained head carries: how to build its features, how it was made, how good it is."""
    return {
        "feature_spec": spec,
        "embed_model": spec["embed_model"],
        "n_features": int(result.weights["mean"].shape[0]),
        "n_layers": sum(1 for k in result.weights if k.startswith("w")),
        "activation": "relu",
        "output": "sigmoid = P(delete)",
        "calibration": result.calibration,
        "recipe": result.recipe,
        "config": config.to_dict(),
        "counts": result.counts,
        "metrics": result.metrics,
        "epochs": result.epochs,
        "warnings": result.warnings,
        "created_at": time.time(),
    }


def train(db, config: TrainConfig, log: Callable[[str], None] = lambda m: None) -> dict:
    """Train on every labelled photo, then record the run, save the head, activate it unless worse, score."""
    from imgrank import prior, runs
    from imgrank.model import labelled_set, library_blocks

    started = time.time()
    torch_device(config.device)  # one clear line before any work
    data = labelled_set(db, use_name=config.use_name, use_meta=config.use_meta, use_prior=config.use_prior)
    result = train_arrays(
        data.x,
        data.y,
        data.image,
        config,
        log,
        names=data.paths,
        blocks=spec_blocks(data.spec),
        library=library_blocks(data.spec, data.library),
        extra=data.prior,
        extra_reason=data.prior_reason,
    )
    used = prior.used(result)
    result.counts["no_vector"] = data.no_vector
    meta = head_meta({**data.spec, "prior": data.prior_spec} if used else data.spec, config, result)
    run = runs.record_and_activate(
        db, result.weights, meta, started=started, oof=(data.sha256, result.check), force=config.force
    )
    return {
        **run,
        "recipe": result.recipe,
        "counts": result.counts,
        "metrics": result.metrics,
        "epochs": result.epochs,
        "warnings": result.warnings,
        "seconds": round(time.time() - started, 2),
    }


def train_file(
    data_path: str, out_path: str, config: TrainConfig, log: Callable[[str], None] = lambda m: None
) -> dict:
    """Train from an exported Parquet file alone (no database, no embedding model); writes a head file."""
    from imgrank import prior
    from imgrank.export import read_parquet
    from imgrank.model import assemble, feature_spec, library_blocks, save_head

    torch_device(config.device)
    data = read_parquet(data_path)
    src = data["spec"]
    spec = feature_spec(
        src["embed_model"],
        src["image_dim"],
        src["name_dim"] if config.use_name else 0,
        meta=config.use_meta and bool(src["meta"]),
    )
    x = assemble(spec, data["image"], data["name"], data["meta"])
    y, image, names = data["y"], data["image"], data["sha256"]
    library = library_blocks(spec, data["library"]) if data["library"] else None
    why = "turned off" if data["prior"] is not None else "the export has none"
    result = train_arrays(
        x,
        y,
        image,
        config,
        log,
        names=names,
        blocks=spec_blocks(spec),
        library=library,
        extra=data["prior"] if config.use_prior else None,
        extra_reason=why,
    )
    if prior.used(result):
        spec["prior"] = src["prior"]
    path = save_head(result.weights, head_meta(spec, config, result), out_path)
    return {
        "head_path": str(path),
        "recipe": result.recipe,
        "counts": result.counts,
        "metrics": result.metrics,
        "epochs": result.epochs,
        "warnings": result.warnings,
        "seconds": round(result.seconds, 2),
    }
