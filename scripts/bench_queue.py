"""Benchmark: how many labels the review page's "most informative" queue saves against labelling at
random, on bench_learn's synthetic folder (same worlds, same held-out scenes, same active head).

For each seed and size n: the held-out AP of the head `train_arrays` makes from n labels chosen
- at random (bench_learn's `random` strategy: an owner labelling as they browse), or
- by the queue (bench_learn's `queue` strategy: imgrank.learn.active.choose, a page of 60 at a time, the
  whole recipe retrained between pages as the daemon does), or
- with --oracle, by bench_learn's `oracle`: half true deletes, half true keeps, at random within
  each. No queue can know the true labels: it shows what meeting deletes as often as keeps gives
  with a perfect head, and so where the target line stands.
Then the labels each needs to reach 0.9 of the AP that 2,000 random labels give (the first size
whose mean over seeds reaches it, and the size from which the mean stays above it), and the time
`choose` takes to pick a page of 60 from 100,000 vectors.

    python scripts/bench_queue.py [--seeds 4] [--first-seed 0] [--jobs 2] [--sizes 60,120,...,2000] [--oracle]

Seeds run in parallel processes (one torch thread each). Writes bench-out/bench_queue.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_learn  # noqa: E402

SIZES = "60,120,180,240,300,360,480,600,800,1000,1500,2000"


def worlds(seed: int, pool: int, test: int) -> tuple[bench_learn.World, bench_learn.World]:
    """bench_learn's split: labels come from the first `pool` photos, held-out photos are whole
    scenes the pool never saw, scored against their true labels."""
    world = bench_learn.make_world(pool + test, seed)
    inside = world.scene <= world.scene[pool - 1]
    fields = (world.x, world.image, world.y_true, world.y_given, world.scene, world.family)
    return bench_learn.World(*(a[inside] for a in fields)), bench_learn.World(*(a[~inside] for a in fields))


def curve(task: tuple[int, str, list[int], int, int, dict]) -> list[dict]:
    """Held-out AP at each size for one seed and one strategy (with imgrank.learn.active's constants set
    as `variant` says)."""
    import torch

    from imgrank.learn import active
    from imgrank.learn.evaluation import average_precision
    from imgrank.learn.logistic import predict
    from imgrank.train import TrainConfig, train_arrays

    torch.set_num_threads(1)
    seed, strategy, sizes, pool, test, variant = task
    for name, value in variant.items():
        setattr(active, name, value)
    labelled, held = worlds(seed, pool, test)
    rows = []
    for n in sizes:
        started = time.perf_counter()
        idx = bench_learn.STRATEGIES[strategy](labelled, n, np.random.default_rng(1000 + seed))
        chose = time.perf_counter() - started
        y = labelled.y_given[idx]
        row = {"seed": seed, "strategy": strategy, "n": n, "delete": int(y.sum()), "choose_s": chose}
        if strategy == "queue":
            row["strategy"] = variant_name(variant)
        try:
            result = train_arrays(
                labelled.x[idx],
                y,
                labelled.image[idx],
                TrainConfig(min_per_class=2, seed=seed),
                blocks=bench_learn.BLOCKS,
                library=bench_learn.library(labelled),
            )
            row["ap"] = average_precision(held.y_true, predict(result.weights, held.x))
        except Exception as e:  # too few deletes among a handful of labels
            row["error"] = str(e)
        line = json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
        print(line, flush=True)
        with open(Path("bench-out", "bench_queue-rows.jsonl"), "a") as f:  # kept if the run is cut short
            f.write(line + "\n")
        rows.append(row)
    return rows


def variant_name(variant: dict) -> str:
    return "queue" + "".join(f" {k}={v}" for k, v in variant.items())


def parse_variant(text: str) -> dict:
    """ "EXPLORE=0,POOL_PER_PICK=4" -> {"EXPLORE": 0.0, "POOL_PER_PICK": 4}: learn.active constants."""
    out: dict = {}
    for part in filter(None, text.split(",")):
        name, value = part.split("=")
        out[name] = float(value) if "." in value else int(value)
    return out


def needed(sizes: list[int], means: dict[int, float | None], target: float) -> tuple[int | None, int | None]:
    """(first size whose mean AP reaches target, size from which every mean stays at or above it),
    over the sizes measured."""
    measured = [n for n in sizes if means[n] is not None]
    first = next((n for n in measured if means[n] >= target), None)
    stays = None
    for n in reversed(measured):
        if means[n] < target:
            break
        stays = n
    return first, stays


def choose_timing(n_photos: int, dim: int = 256) -> dict:
    """Seconds `choose` takes for a page of 60 from n_photos random unit vectors (with a head, with
    2,000 labelled, its 515-number input made up for the candidates; and without a head), on one
    thread of this machine."""
    from imgrank.learn.active import choose

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n_photos, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labelled = vectors[rng.choice(n_photos, 2000, replace=False)]
    p = rng.beta(0.5, 2, n_photos)
    out = {}

    def view(rows):  # the head's standardised input (515 numbers) of the candidates
        return np.random.default_rng(1).normal(size=(len(rows), 515)).astype(np.float32)

    with_head = {"p": p, "labelled": labelled, "view": view}
    for name, kwargs in (("head", with_head), ("no_head", {"p": None, "prior": p})):
        started = time.perf_counter()
        choose(vectors, n=60, rule="badge", **kwargs)
        out[name] = time.perf_counter() - started
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=SIZES)
    ap.add_argument("--queue-max", type=int, default=None, help="the queue's sizes stop here (default: all)")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from this one (new folders)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pool", type=int, default=6000)
    ap.add_argument("--test", type=int, default=3000)
    ap.add_argument("--timing", type=int, default=100_000, help="photos for the choose timing (0: skip)")
    ap.add_argument(
        "--oracle", action="store_true", help="also bench_learn's oracle: half true deletes (the ceiling)"
    )
    ap.add_argument(
        "--variants",
        default="",
        help='imgrank.learn.active constants to try, ";" between variants: "EXPLORE=0;EXPLORE=0.4"',
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    queue_sizes = [n for n in sizes if args.queue_max is None or n <= args.queue_max]
    variants = [parse_variant(v) for v in args.variants.split(";")]
    started = time.time()
    Path("bench-out").mkdir(exist_ok=True)
    Path("bench-out", "bench_queue-rows.jsonl").write_text("")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(s, "queue", queue_sizes, args.pool, args.test, v) for v in variants for s in seeds]
    tasks += [(s, "random", sizes, args.pool, args.test, {}) for s in seeds]
    if args.oracle:
        tasks += [(s, "oracle", queue_sizes, args.pool, args.test, {}) for s in seeds]
    with Pool(args.jobs) as pool:
        rows = [r for rs in pool.map(curve, tasks, chunksize=1) for r in rs]
    strategies = ["random"] + [variant_name(v) for v in variants] + (["oracle"] if args.oracle else [])
    means = {s: {n: mean_ap(rows, s, n) for n in sizes} for s in strategies}
    target = 0.9 * means["random"][max(sizes)]
    reach = {s: needed(sizes, means[s], target) for s in strategies}
    timing = choose_timing(args.timing) if args.timing else {}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.jobs} processes of one torch thread"
    print(f"\nmachine: {machine}; {args.seeds} seeds; {time.time() - started:.0f} s")
    print("labels " + " | ".join(strategies))
    for n in sizes:
        print(f"{n:>6} " + " ".join(f"{means[s][n]:>7.3f}" if means[s][n] else "      -" for s in strategies))
    print(f"0.9 x AP of {max(sizes)} random labels = {target:.3f}")
    for s, (first, stays) in reach.items():
        print(f"{s}: first reaches it at {first} labels, stays above from {stays}")
    if timing:
        print(
            f"choose a page of 60 from {args.timing:,} vectors: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in timing.items())
        )
    Path("bench-out").mkdir(exist_ok=True)
    out = {
        "machine": machine,
        "seeds": args.seeds,
        "means": means,
        "target": target,
        "reach": reach,
        "choose_timing_s": timing,
        "runs": rows,
    }
    Path("bench-out", "bench_queue.json").write_text(json.dumps(out, indent=2) + "\n")
    print("written: bench-out/bench_queue.json")


def mean_ap(rows: list[dict], strategy: str, n: int) -> float | None:
    """Mean held-out AP over the seeds that trained a head (None when none did)."""
    aps = [r["ap"] for r in rows if r["strategy"] == strategy and r["n"] == n and "ap" in r]
    return float(np.mean(aps)) if aps else None


if __name__ == "__main__":
    main()
