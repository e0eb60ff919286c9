"""Benchmark: the original training recipe against `imgrank train`'s defaults.

25,000 labelled synthetic vectors of the real feature width (256-d image + 256-d file name +
3 metadata numbers) at 1:4 delete:keep with 5% label noise.

The original recipe, as read from the issue: an MLP in -> 2048 -> 2048 -> 2048 -> 256 -> 1 (ReLU),
plain BCE, SGD lr 3e-4, batch size 1, 15 epochs. On all 25,000 vectors it would take hours, so
it is timed over part of one epoch and extrapolated (the output says so). Validation AP is
compared on a 2,000-vector subset, where the original runs all of its 15 epochs.

    python scripts/bench_train.py [--steps 400] [--subset 2000] [--labels 30,100,500] [--skip-original]

It also shows where the time of a small `train` goes: the imports (timed in a fresh process: numpy,
scikit-learn, imgrank's training modules) and `train_arrays` itself on 30 to 500 labels of
bench_suite's folders (the whole recipe: folds, L2 path, label check, learning curve, refit), on
one BLAS thread as `train` runs them; and the first `train_arrays` of a fresh process, as `imgrank
train` runs it (scikit-learn and scipy imported inside it).

Prints a table and writes bench-out/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from imgrank.learn.evaluation import average_precision, near_duplicate_groups, stratified_group_folds
from imgrank.learn.logistic import predict
from imgrank.learn.mlp import fit_mlp
from imgrank.train import TrainConfig, train_arrays

IMAGE_DIM, NAME_DIM, META = 256, 256, 3


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, seed: int = 0, noise: float = 0.05):
    """Image vectors in 50 clusters, name vectors, metadata; delete depends non-linearly on them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, IMAGE_DIM))
    image = unit(centres[rng.integers(0, 50, n)] + 1.5 * rng.normal(size=(n, IMAGE_DIM)))
    name = unit(rng.normal(size=(n, NAME_DIM)))
    meta = rng.normal(size=(n, META)).astype(np.float32)
    w1, w2, w3 = rng.normal(size=(3, IMAGE_DIM))
    wn = rng.normal(size=NAME_DIM)
    s = image @ w1 + 0.7 * np.abs(image @ w2) - 0.5 * (image @ w3) ** 2 + 0.3 * (name @ wn) - 0.3 * meta[:, 0]
    y = (s > np.quantile(s, 0.8)).astype(int)  # 1:4 delete:keep
    flip = rng.random(n) < noise
    y[flip] ^= 1
    x = np.concatenate([image, name, meta], axis=1)
    return x, y, image


def original_net(width: int) -> torch.nn.Module:
    sizes = [width, 2048, 2048, 2048, 256]
    layers = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(256, 1))


def original_train(x: np.ndarray, y: np.ndarray, epochs: int, max_steps: int | None = None, seed: int = 0):
    """Batch size 1, SGD lr 3e-4, plain BCE. Returns (net, seconds, steps run)."""
    torch.manual_seed(seed)
    net = original_net(x.shape[1])
    opt = torch.optim.SGD(net.parameters(), lr=3e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    steps, started = 0, time.perf_counter()
    for _ in range(epochs):
        for i in torch.randperm(len(xt), generator=gen).tolist():
            opt.zero_grad()
            loss_fn(net(xt[i : i + 1]).squeeze(1), yt[i : i + 1]).backward()
            opt.step()
            steps += 1
            if max_steps and steps >= max_steps:
                return net, time.perf_counter() - started, steps
    return net, time.perf_counter() - started, steps


def original_predict(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(net(torch.from_numpy(x)).squeeze(1)).numpy()


def split(x, y, image, seed=0):
    groups = near_duplicate_groups(image, TrainConfig().near_dup)
    return stratified_group_folds(y, groups, 5, seed).fold == 0


def fit(x_train, y_train, x_val, y_val, cfg):
    """One MLP fit, early-stopped on the validation rows, refit for the best length: (weights, epochs)."""
    _, curve = fit_mlp(x_train, y_train, cfg, cfg.max_epochs, x_val, y_val)
    best = int(np.argmax([average_precision(y_val, p) or 0 for p in curve])) + 1
    weights, _ = fit_mlp(x_train, y_train, cfg, best)
    return weights, {"epochs": len(curve), "best_epoch": best}


IMPORTS = "import imgrank.train, imgrank.learn.validation, imgrank.learn.suspects, sklearn.linear_model"


def fresh_process(code: str) -> str:
    """The output of `code` run by `python -c` in a fresh process, next to the imgrank this script
    imports: `-c` puts the working directory first on sys.path, so from another checkout's folder
    the fresh process would time that checkout's imgrank."""
    import subprocess
    import sys

    import imgrank

    here = Path(imgrank.__file__).parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=here)
    return out.stdout


def import_seconds() -> float:
    """CPU seconds a fresh process takes to import what `train` needs (median of 3)."""
    code = f"import time; t = time.process_time(); {IMPORTS}; print(time.process_time() - t)"
    return sorted(float(fresh_process(code)) for _ in range(3))[1]


def small_trains(sizes: list[int], seeds: int = 3) -> list[dict]:
    """`train_arrays` seconds on `sizes` labels of bench_suite's "mixed" folder (after imports)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from suite_folders import BLOCKS, make

    rows = []
    for n in sizes:
        times, cpu = [], []
        for seed in range(seeds):
            pool, test, _ = make("mixed", seed, 1500, 1000)
            library = np.concatenate([pool.x, test.x])[:, : sum(BLOCKS)]
            idx = np.random.default_rng(seed).choice(len(pool.x), n, replace=False)
            started, cpu_started = time.perf_counter(), time.process_time()
            train_arrays(
                pool.x[idx],
                pool.y_given[idx],
                pool.image[idx],
                TrainConfig(min_per_class=2, seed=seed),
                blocks=BLOCKS,
                library=library,
            )
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        # CPU seconds (the recipe runs on one thread below 4,096 labels): what an idle core takes,
        # where the wall time on a shared machine also counts the others' work
        rows.append(
            {
                "labels": n,
                "seconds": float(np.median(times)),
                "cpu_seconds": float(np.median(cpu)),
                "all": times,
            }
        )
    return rows


def first_train_seconds(n: int = 500) -> float:
    """CPU seconds of the first `train_arrays` on n labels of the "mixed" folder in a fresh process
    that imported only imgrank's training module, as `imgrank train` runs it: scikit-learn and scipy
    are first imported inside, and their thread pools must still run on one thread (a limit set
    before scipy's BLAS was loaded missed it: 7-23 s of CPU at 500 labels on the busy 2-core VM)."""
    code = f"""
import sys, time
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from suite_folders import BLOCKS, make
from imgrank.train import TrainConfig, train_arrays
pool, test, _ = make("mixed", 0, 1500, 1000)
library = np.concatenate([pool.x, test.x])[:, : sum(BLOCKS)]
idx = np.random.default_rng(0).choice(len(pool.x), {n}, replace=False)
t = time.process_time()
train_arrays(pool.x[idx], pool.y_given[idx], pool.image[idx], TrainConfig(min_per_class=2),
             blocks=BLOCKS, library=library)
print(time.process_time() - t)
"""
    return float(fresh_process(code))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", default="30,100,500", help="small trains timed after imports")
    ap.add_argument("--skip-original", action="store_true", help="only the split and imgrank's 25k train")
    ap.add_argument("--split-only", action="store_true", help="only the imports and the small trains")
    ap.add_argument("--n", type=int, default=25_000)
    ap.add_argument("--subset", type=int, default=2_000)
    ap.add_argument("--steps", type=int, default=400, help="original recipe steps timed on the full set")
    args = ap.parse_args()
    torch.manual_seed(0)
    imports = import_seconds()
    train_arrays(*make_data(200, seed=5), TrainConfig())  # first use: lazy imports inside the recipe
    small = small_trains([int(v) for v in args.labels.split(",")])
    first = first_train_seconds()
    print(f"imports (fresh process, {IMPORTS.count(',') + 1} modules): {imports:.2f} s CPU")
    print(f"first train_arrays on  500 labels, fresh process (as imgrank train runs it): {first:.2f} s CPU")
    for r in small:
        print(
            f"train_arrays on {r['labels']:>4} labels (after imports): {r['seconds']:.2f} s wall, "
            f"{r['cpu_seconds']:.2f} s CPU "
            f"(median of {', '.join(f'{t:.2f}' for t in r['all'])})"
        )
    if args.split_only:
        Path("bench-out").mkdir(exist_ok=True)
        Path("bench-out/bench_train-split.json").write_text(
            json.dumps({"imports_cpu_seconds": imports, "first_cpu_seconds": first, "small": small}, indent=2)
            + "\n"
        )
        return
    x, y, image = make_data(args.n)
    cfg = TrainConfig()
    if args.skip_original:
        started = time.perf_counter()
        result = train_arrays(x, y, image, cfg)
        full = time.perf_counter() - started
        print(
            f"train_arrays on {args.n} labels: {full:.1f} s, recipe {result.recipe}, "
            f"held-out AP {result.metrics['active']['ap']:.3f}"
        )
        Path("bench-out").mkdir(exist_ok=True)
        Path("bench-out/bench_train-split.json").write_text(
            json.dumps(
                {
                    "imports_seconds": imports,
                    "small": small,
                    "full_seconds": full,
                    "full_recipe": result.recipe,
                    "full_ap": result.metrics["active"]["ap"],
                },
                indent=2,
            )
            + "\n"
        )
        return

    # --- full set: time both ---
    val = split(x, y, image)
    n_train = int((~val).sum())
    xw, yw = x[~val][:50], y[~val][:50]
    original_train(xw, yw, 1)  # warm up
    _, secs, steps = original_train(x[~val], y[~val], 1, max_steps=args.steps)
    per_step = secs / steps
    original_full = per_step * n_train * 15

    started = time.perf_counter()
    result = train_arrays(x, y, image, cfg)
    imgrank_full = time.perf_counter() - started
    started = time.perf_counter()
    weights, info = fit(x[~val], y[~val], x[val], y[val], cfg)
    mlp_only = time.perf_counter() - started

    # --- subset: both train to the end, AP on the same held-out validation split ---
    xs, ys, ims = x[: args.subset], y[: args.subset], image[: args.subset]
    vs = split(xs, ys, ims)
    net, orig_sub_secs, _ = original_train(xs[~vs], ys[~vs], 15)
    orig_ap = average_precision(ys[vs], original_predict(net, xs[vs]))
    started = time.perf_counter()
    w_sub, info_sub = fit(xs[~vs], ys[~vs], xs[vs], ys[vs], cfg)
    imgrank_sub_secs = time.perf_counter() - started
    imgrank_ap = average_precision(ys[vs], predict(w_sub, xs[vs]))

    out = {
        "imports_seconds": imports,
        "small": small,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, no GPU",
        "data": {
            "n": args.n,
            "width": x.shape[1],
            "delete_rate": round(float(y.mean()), 3),
            "label_noise": 0.05,
        },
        "original_recipe": "MLP in-2048-2048-2048-256-1 ReLU, BCE, SGD lr 3e-4, batch 1, 15 epochs",
        "full": {
            "train_rows": n_train,
            "original_seconds_per_step": per_step,
            "original_steps_timed": steps,
            "original_seconds_extrapolated": original_full,
            "imgrank_train_seconds": imgrank_full,
            "imgrank_mlp_fit_seconds": mlp_only,
            "imgrank_epochs": info,
            "speedup_vs_train": original_full / imgrank_full,
            "speedup_vs_mlp_fit": original_full / mlp_only,
            "imgrank_recipe": result.recipe,
            "imgrank_val_ap": result.metrics["active"]["ap"],
            "baseline_val_ap": result.metrics["baseline"]["ap"],
            "chance_ap": result.metrics["active"]["chance_ap"],
        },
        "subset": {
            "n": args.subset,
            "val_rows": int(vs.sum()),
            "original_seconds": orig_sub_secs,
            "original_val_ap": orig_ap,
            "imgrank_seconds": imgrank_sub_secs,
            "imgrank_val_ap": imgrank_ap,
            "imgrank_epochs": info_sub,
        },
    }
    f = out["full"]
    print(f"machine: {out['machine']}")
    print(
        f"data: {args.n} vectors x {x.shape[1]} features, delete rate {out['data']['delete_rate']}, 5% noise"
    )
    print()
    print(f"{'':<44}{'original':>14}{'imgrank':>12}")
    print(
        f"{'25k: wall time, s (original EXTRAPOLATED)':<44}{original_full:>14.0f}{imgrank_full:>12.1f}"
        f"   ({steps} steps timed: {per_step * 1000:.2f} ms/step x {n_train} rows x 15 epochs)"
    )
    print(f"{'25k: speed-up (whole imgrank train recipe)':<44}{'':>14}{f['speedup_vs_train']:>11.0f}x")
    print(f"{'25k: speed-up (MLP fit only)':<44}{'':>14}{f['speedup_vs_mlp_fit']:>11.0f}x")
    chance = f"25k: validation AP (chance {f['chance_ap']:.3f})"
    print(f"{chance:<44}{'-':>14}{f['imgrank_val_ap']:>12.3f}")
    print(f"{'2k subset: wall time, s (both run to end)':<44}{orig_sub_secs:>14.1f}{imgrank_sub_secs:>12.2f}")
    print(f"{'2k subset: validation AP':<44}{orig_ap:>14.3f}{imgrank_ap:>12.3f}")
    Path("bench-out").mkdir(exist_ok=True)
    Path("bench-out/bench_train.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\nwritten: bench-out/bench_train.json")


if __name__ == "__main__":
    main()
