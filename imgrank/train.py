"""Train the head: config, group-aware split, MLP with early stopping, metrics, runs.

torch is imported only inside the functions that train (it is the `train` extra); the metrics
and the split are plain numpy.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from imgrank.errors import ImgrankError

LABEL_VALUE = {"keep": 0, "delete": 1}


@dataclass
class TrainConfig:
    """Every knob of a training run, with its default. The head stores it, so a run can be repeated."""

    hidden: tuple[int, ...] = (256,)  # hidden layer widths of the MLP; () is logistic regression
    dropout: float = 0.2
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 5  # epochs without a better validation AP before stopping...
    patience_steps: int = 300  # ...and at least this many minibatch steps (small data: more epochs)
    val_fraction: float = 0.2
    near_dup: float = 0.95  # cosine similarity of image embeddings above which two photos are one group
    use_name: bool = True  # file-name embedding as features
    use_meta: bool = True  # log pixel count, aspect ratio, file size
    cv: int = 0  # K > 1: also compute out-of-fold P(delete) for every labelled photo
    min_per_class: int = 10
    worse_margin: float = 0.02  # a new head whose AP is this much below the active one's is not activated
    force: bool = False  # activate anyway
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


# --- metrics (numpy) ---


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Probability a random delete scores above a random keep (ties count half)."""
    y = np.asarray(y, bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = np.asarray(p)[order]
    # average rank of tied scores
    _, start, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the precision-recall curve as a step function over distinct thresholds."""
    y = np.asarray(y, np.float64)
    if y.sum() == 0:
        return None
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ys, ps = y[order], np.asarray(p)[order]
    tp, fp = np.cumsum(ys), np.cumsum(1 - ys)
    last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


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

    def rnd(x):
        return None if x is None else round(x, 4)

    return {
        "n": len(y),
        "roc_auc": rnd(roc_auc(y, p)),
        "ap": rnd(average_precision(y, p)),
        "chance_ap": ratio(int(y.sum()), len(y)),
        "precision_at_10": rnd(float(y[order[:10]].mean())) if len(y) else None,
        "precision_at_50": rnd(float(y[order[:50]].mean())) if len(y) else None,
        "delete": {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)},
        "keep": {"precision": ratio(tn, tn + fn), "recall": ratio(tn, tn + fp)},
        # rows: true label, columns: predicted label
        "confusion": {"keep": {"keep": tn, "delete": fp}, "delete": {"keep": fn, "delete": tp}},
    }


# --- the split (numpy) ---


def near_duplicate_groups(vectors: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """Group id per row: rows whose unit vectors have cosine similarity > threshold, transitively."""
    n = len(vectors)
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    v = np.asarray(vectors, dtype=np.float32)
    v = np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    for start in range(0, n, block):
        # only the upper triangle: each pair once, half the matrix product
        sims = v[start : start + block] @ v[start:].T
        rows, cols = np.nonzero(sims > threshold)
        for i, j in zip(rows + start, cols + start, strict=True):
            if j > i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)])


def stratified_group_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per row: a group never straddles folds, and each fold gets its share of each class."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    size = np.bincount(inverse)
    has_delete = np.bincount(inverse, weights=np.asarray(y, float)) > 0
    fold_of_group = np.empty(len(ids), int)
    for stratum in (True, False):
        members = np.nonzero(has_delete == stratum)[0]
        members = members[rng.permutation(len(members))]
        members = members[np.argsort(-size[members], kind="stable")]  # big groups first, ties random
        load = np.zeros(k)
        for g in members:
            f = int(np.argmin(load))
            fold_of_group[g] = f
            load[f] += size[g]
    return fold_of_group[inverse]


# --- training (torch) ---


def require_torch():
    """The torch module, or one clear line saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ImgrankError("training needs torch: pip install 'imgrank[train]'") from None
    return torch


def standardiser(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows (unknown metadata, NaN, is left out)."""
    with warnings.catch_warnings():  # an all-unknown metadata column is fine: it becomes 0
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x_train, axis=0).astype(np.float32)
        std = np.nanstd(x_train, axis=0).astype(np.float32)
    mean = np.where(np.isnan(mean), 0.0, mean).astype(np.float32)
    std = np.where(~np.isfinite(std) | (std < 1e-6), 1.0, std).astype(np.float32)
    return mean, std


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Standardised features; unknown values (NaN) become the mean, 0."""
    z = (x - mean) / std
    return np.where(np.isnan(z), 0.0, z).astype(dtype)


class AdamW:
    """AdamW (decoupled weight decay, as torch.optim.AdamW with its defaults otherwise).

    Written out because torch.optim imports torch._dynamo on first use: about 2 s of start-up in
    every `imgrank train` and every retraining process, a fifth of a 25,000-photo run here."""

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.lr, self.wd, self.betas, self.eps, self.t = lr, weight_decay, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                if p.grad is None:
                    continue
                p.mul_(1 - self.lr * self.wd)
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    config: TrainConfig,
    hidden: tuple[int, ...] | None = None,
    epochs: int | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Train one head. With validation data, stop early on its AP and keep the best epoch's weights;
    without, train exactly `epochs` epochs. Returns (numpy weights, info)."""
    torch = require_torch()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    hidden = config.hidden if hidden is None else hidden

    mean, std = standardiser(x_train)

    def prep(x):
        return torch.from_numpy(standardise(x, mean, std)).to(device)

    xt, yt = prep(x_train), torch.from_numpy(np.asarray(y_train, np.float32)).to(device)
    layers, width = [], x_train.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Dropout(config.dropout)]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    net = torch.nn.Sequential(*layers).to(device)

    n_pos = float(yt.sum())
    pos_weight = torch.tensor([(len(yt) - n_pos) / max(n_pos, 1.0)], device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)

    def snapshot():
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        w = {"mean": mean, "std": std}
        for i, m in enumerate(linear):
            w[f"w{i}"] = m.weight.detach().cpu().numpy().copy()
            w[f"b{i}"] = m.bias.detach().cpu().numpy().copy()
        return w

    xv = prep(x_val) if x_val is not None else None
    best = {"ap": -1.0, "epoch": 0, "weights": None}
    n_epochs = epochs or config.max_epochs
    steps_per_epoch = -(-len(xt) // config.batch_size)
    epoch = 0
    for epoch in range(1, n_epochs + 1):
        net.train()
        perm = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), config.batch_size):
            idx = perm[i : i + config.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
        if xv is None:
            continue
        net.eval()
        with torch.no_grad():
            p = torch.sigmoid(net(xv).squeeze(1)).cpu().numpy()
        ap = average_precision(y_val, p) or 0.0
        if ap > best["ap"] + 1e-6:
            best = {"ap": ap, "epoch": epoch, "weights": snapshot()}
        elif epoch - best["epoch"] >= max(config.patience, config.patience_steps / steps_per_epoch):
            break
    if xv is None:
        return snapshot(), {"epochs": epoch, "best_epoch": epoch}
    return best["weights"], {"epochs": epoch, "best_epoch": best["epoch"]}


def fit_logistic(
    x_train: np.ndarray, y_train: np.ndarray, config: TrainConfig, iterations: int = 50
) -> dict[str, np.ndarray]:
    """The baseline: class-weighted logistic regression with an L2 penalty (like C=1), fit by
    Newton's method (iteratively reweighted least squares) in numpy: exact in a few steps."""
    mean, std = standardiser(x_train)
    z = standardise(x_train, mean, std)
    x1 = np.hstack([z, np.ones((len(z), 1), np.float32)])  # last column: the bias
    y = np.asarray(y_train, np.float64)
    n_pos = y.sum()
    sample_w = np.where(y == 1, (len(y) - n_pos) / max(n_pos, 1.0), 1.0)
    penalty = np.eye(x1.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not penalised
    w = np.zeros(x1.shape[1])
    for _ in range(iterations):  # float32 products (the slow part), float64 sums and solve
        p = 1 / (1 + np.exp(-(x1 @ w.astype(np.float32)).astype(np.float64)))
        grad = x1.T.astype(np.float64) @ (sample_w * (p - y)) + penalty @ w
        curvature = (sample_w * p * (1 - p)).astype(np.float32)
        hessian = (x1 * curvature[:, None]).T @ x1 + penalty
        delta = np.linalg.solve(hessian.astype(np.float64), grad)
        w -= delta
        if np.abs(delta).max() < 1e-6:
            break
    return {
        "mean": mean,
        "std": std,
        "w0": w[None, :-1].astype(np.float32),
        "b0": w[-1:].astype(np.float32),
    }


def predict(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """P(delete) with numpy, the same way a saved head is scored."""
    from imgrank.model import Head

    n_layers = sum(1 for k in weights if k.startswith("w"))
    return Head(weights, {"n_layers": n_layers}).predict(x)


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    metrics: dict
    counts: dict
    info: dict
    oof: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def check_enough(y: np.ndarray, config: TrainConfig) -> None:
    """One clear line when there are too few labels of a class."""
    n_del, n_keep = int(y.sum()), int(len(y) - y.sum())
    need = max(config.min_per_class, config.cv or 0)
    short = [(need - n, name) for n, name in ((n_del, "delete"), (n_keep, "keep")) if n < need]
    if short:
        more = " and ".join(f"{k} more as {name}" for k, name in short)
        raise ImgrankError(
            f"too few labels to train: have {n_del} delete and {n_keep} keep; label at least {more} "
            f"(need {need} of each; `imgrank relabel delete|keep PATH...`)"
        )


def train_arrays(
    x: np.ndarray,
    y: np.ndarray,
    image: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] = lambda m: None,
) -> TrainResult:
    """The whole recipe on arrays: group-aware split, MLP + baseline, metrics, optional out-of-fold."""
    started = time.time()
    y = np.asarray(y, int)
    check_enough(y, config)
    groups = near_duplicate_groups(image, config.near_dup)
    k_val = max(2, round(1 / config.val_fraction))
    fold = stratified_group_folds(y, groups, k_val, config.seed)
    val = fold == 0
    if y[val].sum() == 0 or y[~val].sum() == 0:
        raise ImgrankError(
            "too few distinct delete photos to hold some out for validation: label more as delete"
        )
    log(f"training on {int((~val).sum())} photos, validating on {int(val.sum())}")
    weights, info = fit(x[~val], y[~val], x[val], y[val], config)
    p_val = predict(weights, x[val])
    base_weights = fit_logistic(x[~val], y[~val], config)
    metrics = {"mlp": evaluate(y[val], p_val), "baseline": evaluate(y[val], predict(base_weights, x[val]))}
    counts = {
        "keep": int((y == 0).sum()),
        "delete": int(y.sum()),
        "train": {"keep": int((y[~val] == 0).sum()), "delete": int(y[~val].sum())},
        "val": {"keep": int((y[val] == 0).sum()), "delete": int(y[val].sum())},
        "groups": int(len(np.unique(groups))),
    }
    oof = None
    if config.cv and config.cv > 1:
        # Each fold trains for the epochs early stopping chose above, so the held-out fold stays unseen.
        oof = np.zeros(len(y))
        cv_fold = stratified_group_folds(y, groups, config.cv, config.seed + 1)
        for f in range(config.cv):
            held = cv_fold == f
            log(f"cross-validation fold {f + 1}/{config.cv}")
            w, _ = fit(x[~held], y[~held], None, None, config, epochs=max(1, info["best_epoch"]))
            oof[held] = predict(w, x[held])
        metrics["oof"] = evaluate(y, oof)
    return TrainResult(weights, metrics, counts, info, oof, time.time() - started)


def labelled_data(db, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(x, y, parts, spec) for every labelled photo with a vector of the current embedding model."""
    from imgrank.model import assemble, current_model_id, feature_spec
    from imgrank.vectors import load_parts

    model_id = current_model_id()
    labels = dict(db.execute("SELECT sha256, label FROM labels").fetchall())
    parts = load_parts(db, model_id, sorted(labels))
    if not parts["sha256"] and labels:
        raise ImgrankError(
            f"none of the {len(labels)} labelled photos has a vector from {model_id}: run `imgrank scan`"
        )
    spec = feature_spec(
        model_id, parts["image_dim"], parts["name_dim"] if config.use_name else 0, meta=config.use_meta
    )
    y = np.array([LABEL_VALUE[labels[s]] for s in parts["sha256"]], int)
    parts["no_vector"] = len(labels) - len(parts["sha256"])
    return assemble(spec, parts["image"], parts["name"], parts["meta"]), y, parts, spec


def head_meta(spec: dict, config: TrainConfig, result: TrainResult) -> dict:
    n_layers = sum(1 for k in result.weights if k.startswith("w"))
    return {
        "feature_spec": spec,
        "embed_model": spec["embed_model"],
        "n_features": int(result.weights["mean"].shape[0]),
        "n_layers": n_layers,
        "activation": "relu",
        "output": "sigmoid = P(delete)",
        "config": config.to_dict(),
        "counts": result.counts,
        "metrics": result.metrics,
        "epochs": result.info,
        "created_at": time.time(),
    }


def train(db, config: TrainConfig, log: Callable[[str], None] = lambda m: None) -> dict:
    """Train on every labelled photo, record the run, save the head, activate it unless worse, score."""
    from imgrank import config as paths
    from imgrank.model import active_run, save_head, score_all, use_run

    started = time.time()
    x, y, parts, spec = labelled_data(db, config)
    result = train_arrays(x, y, parts["image"], config, log)
    result.counts["no_vector"] = parts["no_vector"]
    cur = db.execute(
        "INSERT INTO runs (started_at, finished_at, config, counts, metrics, embed_model, active) "
        "VALUES (?, ?, ?, ?, ?, ?, 0)",
        [
            started,
            time.time(),
            json.dumps(config.to_dict()),
            json.dumps(result.counts),
            json.dumps(result.metrics),
            spec["embed_model"],
        ],
    )
    run_id = cur.lastrowid
    head_path = save_head(
        result.weights,
        {**head_meta(spec, config, result), "run_id": run_id},
        paths.heads_dir() / f"head-{run_id}.safetensors",
    )
    db.execute("UPDATE runs SET head_path = ? WHERE id = ?", [str(head_path), run_id])
    if result.oof is not None:
        with db.atomic():
            db.conn.executemany(
                "INSERT INTO oof (run_id, sha256, p_delete) VALUES (?, ?, ?)",
                [(run_id, s, float(p)) for s, p in zip(parts["sha256"], result.oof, strict=True)],
            )

    previous = active_run(db)
    new_ap = result.metrics["mlp"]["ap"] or 0.0
    old_ap = (json.loads(previous["metrics"] or "{}").get("mlp", {}).get("ap") if previous else None) or 0.0
    activate = previous is None or config.force or new_ap >= old_ap - config.worse_margin
    if activate:
        use_run(db, run_id)
        note = f"run {run_id} is now the active head"
    else:
        note = (
            f"run {run_id} NOT activated: its validation AP {new_ap:.3f} is clearly below the active run "
            f"{previous['id']}'s {old_ap:.3f} (use `imgrank model use {run_id}` or `train --force`)"
        )
    scored = score_all(db) if activate or previous else 0
    return {
        "id": run_id,
        "activated": activate,
        "note": note,
        "counts": result.counts,
        "metrics": result.metrics,
        "epochs": result.info,
        "seconds": round(time.time() - started, 2),
        "head_path": str(head_path),
        "scored": scored,
    }


def train_file(
    data_path: str, out_path: str, config: TrainConfig, log: Callable[[str], None] = lambda m: None
) -> dict:
    """Train from an exported Parquet file alone (no database, no embedding model); writes a head file."""
    from imgrank.export import read_parquet
    from imgrank.model import assemble, feature_spec, save_head

    data = read_parquet(data_path)
    src = data["spec"]
    spec = feature_spec(
        src["embed_model"],
        src["image_dim"],
        src["name_dim"] if config.use_name else 0,
        meta=config.use_meta and bool(src["meta"]),
    )
    x = assemble(spec, data["image"], data["name"], data["meta"])
    result = train_arrays(x, data["y"], data["image"], config, log)
    path = save_head(result.weights, head_meta(spec, config, result), out_path)
    return {
        "head_path": str(path),
        "counts": result.counts,
        "metrics": result.metrics,
        "epochs": result.info,
        "seconds": round(result.seconds, 2),
    }


def format_report(run: dict) -> str:
    """The metrics table a person reads after training."""
    m, b = run["metrics"]["mlp"], run["metrics"]["baseline"]
    c = run["counts"]

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"labelled: {c['delete']} delete, {c['keep']} keep ({c['groups']} near-duplicate groups)",
        f"train:    {c['train']['delete']} delete, {c['train']['keep']} keep",
        f"validate: {c['val']['delete']} delete, {c['val']['keep']} keep (chance AP {f(m['chance_ap'])})",
        "",
        f"{'validation':<22}{'MLP head':>10}{'baseline':>10}",
    ]
    rows = [
        ("ROC AUC", "roc_auc"),
        ("average precision", "ap"),
        ("precision@10 delete", "precision_at_10"),
        ("precision@50 delete", "precision_at_50"),
    ]
    for title, key in rows:
        lines.append(f"{title:<22}{f(m[key]):>10}{f(b[key]):>10}")
    for cls in ("delete", "keep"):
        for what in ("precision", "recall"):
            lines.append(f"{cls + ' ' + what:<22}{f(m[cls][what]):>10}{f(b[cls][what]):>10}")
    lines.append("")
    lines.append("confusion (MLP, rows = true label):   predicted keep  predicted delete")
    for cls in ("keep", "delete"):
        row = m["confusion"][cls]
        lines.append(f"  {cls:<36}{row['keep']:>14}{row['delete']:>18}")
    if "oof" in run["metrics"]:
        o = run["metrics"]["oof"]
        lines.append("")
        lines.append(f"out-of-fold ({o['n']} photos): ROC AUC {f(o['roc_auc'])}, AP {f(o['ap'])}")
    return "\n".join(lines)
