"""Train the head: the config, and the run from labels to a calibrated head.

Cross-validation over near-duplicate groups chooses the recipe (`validation.py`: how many epochs,
whether the MLP beats the L2 logistic regression, whether the prior's features help); the head
that scores the folder is then refit on ALL labels with that recipe, and calibrated on the
held-out predictions. Metrics, groups and folds are in `evaluation.py` (numpy), the MLP in
`mlp.py`; the run bookkeeping is in `runs.py`. torch is imported only inside the functions that
train (it is the `train` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from imgrank import prior
from imgrank.devices import torch_device
from imgrank.export import read_parquet
from imgrank.learn.contrast import centroids
from imgrank.learn.directions import differences
from imgrank.learn.evaluation import dominated_by_one_group, first_k
from imgrank.learn.logistic import fit_platt, spec_blocks
from imgrank.learn.logistic import logit as _logit
from imgrank.learn.mlp import fit_mlp
from imgrank.learn.recipe import TrainConfig
from imgrank.learn.suspects import label_check
from imgrank.learn.validation import (
    Split,
    Validation,
    learning_curve,
    offer_prior,
    refit_logistic,
    split,
    validate_logistic,
    validate_mlp,
)
from imgrank.model import assemble, feature_spec, library_blocks, save_head

# --- training (torch) ---


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


def finish(
    y: np.ndarray,
    parts: Split,
    chosen: Validation,
    config: TrainConfig,
    log: Callable[[str], None] = lambda m: None,
    names: list[str] | None = None,
) -> TrainResult:
    """The chosen recipe refit on every row, calibrated on its held-out predictions, and the label
    check (`label_check`)."""
    x, cv, recipe, held = chosen.x, chosen.cv, chosen.recipe, parts.held
    folds, groups = parts.folds, parts.groups
    log(f"refitting the {'MLP' if recipe == 'mlp' else 'logistic regression'} on all {len(y)} labels")
    if recipe == "mlp":
        weights, _ = fit_mlp(x, y, config, cv["epochs"], space=chosen.mlp_space)
    else:
        weights = refit_logistic(chosen, y)
    if chosen.centroids is not None:  # the head's first step: how each photo differs from its cluster
        weights["centroids"] = chosen.centroids
    oof = cv["mlp"] if recipe == "mlp" else cv["baseline"]
    calibration = fit_platt(_logit(oof[held]), y[held])
    chosen.metrics["verdict"] = first_k(y[held], oof[held])
    chosen.metrics["curve"] = learning_curve(
        chosen.design, y, folds.fold, folds.k, cv["l2"], cv["baseline"], config.seed
    )
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
        label_check(chosen.design, y, groups, (folds, cv["baseline"]), cv["l2"], config),
        warnings,
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
    `library`: those leading blocks for a sample of the folder's photos (`head_inputs.library_sample`),
    which shape the L2 prior (`input_space`). `extra`: the prior's features, offered as more
    columns and kept only if validation shows they help (`offer_prior`; the head has them when
    metrics["prior_features"]["used"]); `extra_reason`: why there are none, when None."""
    import sklearn.linear_model  # noqa: F401  loaded before the limit below, which then reaches scipy's own BLAS
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    started = time.time()
    y = np.asarray(y, int)
    # Matrices of a few hundred rows: one BLAS thread. Two threads on two busy cores made each solve
    # 16 times slower (0.12 s instead of 0.008 s for 500 x 500 while other work ran).
    with threadpool_limits(limits=config.threads or (1 if len(y) < 4096 else None)):
        return _train_arrays(x, y, image, config, log, names, blocks, library, extra, extra_reason, started)


def _train_arrays(x, y, image, config, log, names, blocks, library, extra, extra_reason, started):
    parts = split(y, image, config)
    image_dim = blocks[0] if blocks else 0
    found = centroids(library, image_dim, config.contrast, config.seed) if image_dim else None
    differ = None
    if found is not None and config.differ:
        differ = differences(library, image_dim, config.near_dup, config.max_group)
    fit = partial(
        validate_logistic,
        y=y,
        parts=parts,
        config=config,
        blocks=blocks,
        library=library,
        centroids=found,
        differ=differ,
    )
    chosen, compared = offer_prior(fit, x, extra, log, extra_reason)
    chosen = validate_mlp(chosen, y, parts, config, log, blocks, library)
    chosen.metrics["prior_features"] = compared
    result = finish(y, parts, chosen, config, log, names)
    result.seconds = time.time() - started
    return result


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
        "contrast": len(result.weights["centroids"]) if "centroids" in result.weights else 0,
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
    from imgrank import runs  # lazy: sqlite_utils (train --data reads no store)
    from imgrank.head_inputs import labelled_set  # lazy: sqlite_utils

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
        db,
        result.weights,
        meta,
        started=started,
        oof=(data.sha256, result.check),
        force=config.force,
        margin=config.worse_margin,
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
