"""Benchmark: the learning curve. How well does the active head rank photos it never saw, with
20 to 2,000 labels, against a plain L2 logistic regression and the seed recipe?

The labelled set is synthetic but structured like a real folder, in the real feature width
(256-d image + 256-d file name + 3 metadata numbers = 515):
- kinds of photos (clusters in a cone, as CLIP-like vectors sit), scenes within a kind, and bursts
  of near-duplicate shots of one scene (pairwise cosine about 0.98);
- alike families (screenshots of apps: pairwise cosine about 0.93-0.97, with names and screen
  aspect of their own) that are mostly deleted;
- tiny images, and a quality direction within each kind, that make a photo unwanted;
- 1:4 delete:keep, and 5% of the labels flipped (the owner's mistakes).
Held-out photos come from scenes none of the labels saw and carry their true, unflipped labels.

For each size: held-out AP of
- imgrank: `train_arrays` (cross-validated recipe, refit on all labels) -- the active head;
- imgrank, fold-average: the same recipe's fold heads averaged instead of one refit (to measure
  which ranks better);
- logistic: a plain L2 logistic regression on the image vectors alone, refit on all labels;
- seed recipe: MLP 515-2048-2048-2048-256-1, batch 1, SGD lr 3e-4, 15 epochs, where it runs
  under a minute;
and the share of flipped labels found in the top 2 x flips of `suspects` (the label check `train`
stores: calibrated held-out P(label) over several fold splits). imgrank runs with `train`'s defaults
(each column standardised, the name vector kept to its families' directions); `--balanced` gives
each feature block one share of the prior, shaped by the folder's photos, as
`TrainConfig(balance_blocks=True)` does (the default before issue 23).

How labels are chosen is a plug-in: STRATEGIES maps a name to a function
(world, n, rng) -> indices of the pool to label. "random" is what a user labelling as they go does.

    python scripts/bench_learn.py [--sizes 20,50,100,200,500,2000] [--seeds 3] [--strategy random]

Prints a table and writes bench-out/bench_learn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrank.learn.evaluation import average_precision, stratified_group_folds
from imgrank.learn.head_math import calibrated, standardise
from imgrank.learn.logistic import fit_logistic, input_space, logit, predict
from imgrank.learn.mlp import fit_mlp
from imgrank.model import LIBRARY_SAMPLE
from imgrank.train import TrainConfig, train_arrays

IMAGE_DIM, NAME_DIM = 256, 256
BLOCKS = (IMAGE_DIM, NAME_DIM)  # the leading feature blocks: image vector, name vector (then metadata)
SEED_RECIPE_BUDGET_S = 60.0


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class World:
    """Photos with features, true labels (1 = delete), what the owner labelled them, and their scene."""

    x: np.ndarray  # N x 515
    image: np.ndarray
    y_true: np.ndarray
    y_given: np.ndarray  # with 5% flipped
    scene: np.ndarray
    family: np.ndarray  # -1: not in an alike family


def make_world(n: int, seed: int, n_kinds: int = 40, n_families: int = 3, flip: float = 0.05) -> World:
    """A folder of n photos: kinds, scenes, bursts, alike families, tiny images, a quality direction."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=IMAGE_DIM)  # CLIP-like vectors share a direction: unrelated photos ~0.4
    kinds = rng.normal(size=(n_kinds, IMAGE_DIM))
    kind_bias = rng.normal(-0.3, 0.8, n_kinds)  # some kinds are deleted far more often
    quality = unit(rng.normal(size=IMAGE_DIM))
    families = rng.normal(size=(n_families, IMAGE_DIM))
    camera_name, screenshot_name = rng.normal(size=(2, NAME_DIM))
    family_names = rng.normal(size=(n_families, NAME_DIM))

    image, name, meta, z, scene_of, family_of = [], [], [], [], [], []
    scene = 0
    while len(image) < n:
        scene += 1
        if rng.random() < 0.12:  # a run of screenshots of one app (its own scene id per shot)
            f = int(rng.integers(n_families))
            for _ in range(int(rng.integers(1, 4))):
                image.append(0.8 * common + families[f] + 0.23 * rng.normal(size=IMAGE_DIM))
                name.append(screenshot_name + 0.6 * family_names[f] + 0.4 * rng.normal(size=NAME_DIM))
                meta.append([np.log(2.6e6), np.log(19.5 / 9), np.log(4e5) + 0.3 * rng.normal()])
                z.append(2.4 + rng.logistic(scale=0.5))
                scene_of.append(scene)
                family_of.append(f)
                scene += 1
            continue
        k = int(rng.integers(n_kinds))
        q = rng.normal()  # the scene's quality: low quality is deleted
        tiny = rng.random() < 0.05
        centre = 0.8 * common + kinds[k] + 0.6 * rng.normal(size=IMAGE_DIM) - 0.35 * q * quality * 16
        shots = 1 if rng.random() < 0.6 else int(rng.integers(2, 9))
        for _ in range(shots):
            image.append(centre + 0.2 * rng.normal(size=IMAGE_DIM))
            name.append(camera_name + 0.5 * rng.normal(size=NAME_DIM))
            px = np.log(1e5) if tiny else np.log(12e6) + 0.2 * rng.normal()
            meta.append([px, np.log(4 / 3) * rng.choice([1, -1]), px - 3.4 + 0.2 * rng.normal()])
            z.append(kind_bias[k] - 1.2 * q + 3.0 * tiny + 0.4 * max(q, 0) ** 2 + rng.logistic(scale=0.5))
            scene_of.append(scene)
            family_of.append(-1)
    image = unit(np.array(image[:n]))
    x = np.concatenate([image, unit(np.array(name[:n])), np.array(meta[:n], np.float32)], axis=1)
    z = np.array(z[:n])
    y_true = (z > np.quantile(z, 0.8)).astype(int)  # 1:4 delete:keep
    flipped = rng.random(n) < flip
    return World(x, image, y_true, y_true ^ flipped, np.array(scene_of[:n]), np.array(family_of[:n]))


def library(world: World) -> np.ndarray:
    """The leading feature blocks of the folder's library sample (`head_inputs.library_sample`): up to
    LIBRARY_SAMPLE of its photos, labelled or not, which shape the head's L2 prior."""
    rows = np.random.default_rng(0).permutation(len(world.x))[:LIBRARY_SAMPLE]
    return world.x[rows, : sum(BLOCKS)]


def choose_random(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    """Label n photos picked at random (an owner labelling as they browse)."""
    return rng.choice(len(world.y_true), size=min(n, len(world.y_true)), replace=False)


PAGE = 60  # photos on one page of the review queue


def choose_queue(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    """Label what the review page's "most informative" queue offers, a page at a time: the first
    page before any head (imgrank.learn.active.choose without scores), then after each page the whole
    recipe retrained on the labels so far (as the daemon does) and the next page chosen by the
    same `choose` from its calibrated P(delete). One run per folder, extended as sizes grow: the
    first n labels are what an owner who labelled n would have labelled."""
    labelled = _QUEUE_RUNS.setdefault(id(world), (world, []))[1]  # the world kept: its id stays its own
    while len(labelled) < n:
        labelled += queue_page(world, labelled, len(labelled) // PAGE)
    return np.array(labelled[:n])


_QUEUE_RUNS: dict[int, tuple[World, list[int]]] = {}


def queue_page(world: World, labelled: list[int], page: int) -> list[int]:
    """One page of the queue for the labels so far, with the head retrained on them."""
    from imgrank.errors import ImgrankError
    from imgrank.learn.active import choose

    rest = np.setdiff1d(np.arange(len(world.y_true)), labelled)
    p = view = None
    if labelled:
        y = world.y_given[labelled]
        try:
            result = train_arrays(
                world.x[labelled],
                y,
                world.image[labelled],
                TrainConfig(min_per_class=2),
                blocks=BLOCKS,
                library=library(world),
            )
            p = calibrated(logit(predict(result.weights, world.x[rest])), result.calibration)

            def view(rows):  # what the head sees of those photos: its standardised input
                return standardise(world.x[rest[rows]], result.weights["mean"], result.weights["std"])

        except ImgrankError:  # too few deletes for a head yet: the page stays a cold-start page
            p = None
    picks = choose(
        world.image[rest], p, PAGE, labelled=world.image[labelled], seed=page, view=view, rule="badge"
    )
    return [int(rest[i]) for i, _ in picks]


def choose_oracle(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    """Not a strategy a queue can follow: what a queue whose head knew every TRUE label could give
    at most by meeting deletes as often as keeps. Half the labels drawn at random among the true
    deletes, half among the true keeps; the head still learns from the owner's labels (mistakes
    included), as any queue's does. The mark the review queue is held against (bench_queue --oracle)."""
    deletes, keeps = np.flatnonzero(world.y_true == 1), np.flatnonzero(world.y_true == 0)
    half = min(len(deletes), n // 2)
    return np.concatenate(
        [rng.choice(deletes, half, replace=False), rng.choice(keeps, n - half, replace=False)]
    )


STRATEGIES: dict[str, Callable[[World, int, np.random.Generator], np.ndarray]] = {
    "random": choose_random,
    "queue": choose_queue,
    "oracle": choose_oracle,
}


def seed_recipe(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, budget_s: float
) -> tuple[np.ndarray | None, float]:
    """The seed project's recipe: MLP 2048x3 -> 256, plain BCE, SGD lr 3e-4, batch 1, 15 epochs.
    Skipped (None) when the first epoch shows 15 would take longer than the budget."""
    import torch

    torch.manual_seed(0)
    sizes = [x.shape[1], 2048, 2048, 2048, 256]
    layers = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(256, 1))
    opt = torch.optim.SGD(net.parameters(), lr=3e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(np.nan_to_num(x)), torch.from_numpy(y.astype(np.float32))
    started = time.perf_counter()
    for epoch in range(15):
        for i in torch.randperm(len(xt)).tolist():
            opt.zero_grad()
            loss_fn(net(xt[i : i + 1]).squeeze(1), yt[i : i + 1]).backward()
            opt.step()
        if epoch == 0 and (time.perf_counter() - started) * 15 > budget_s:
            return None, (time.perf_counter() - started) * 15
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(np.nan_to_num(x_test))).squeeze(1)).numpy()
    return p, time.perf_counter() - started


def fold_average(x, y, image_groups, result, config: TrainConfig, x_test, lib) -> np.ndarray:
    """The alternative to one refit: the chosen recipe's fold heads, their P(delete) averaged."""
    folds = stratified_group_folds(y, image_groups, result.counts["folds"], config.seed)
    space = input_space(x, BLOCKS if config.balance_blocks else None, lib)
    preds = []
    for f in range(folds.k):
        rows = folds.fold != f
        if result.recipe == "mlp":
            w, _ = fit_mlp(x[rows], y[rows], config, result.epochs, space=space)
        else:
            w = fit_logistic(x[rows], y[rows], result.metrics["baseline"]["l2"], space=space)
        preds.append(predict(w, x_test))
    return np.mean(preds, axis=0)


def flips_found(result, y_given: np.ndarray, y_true: np.ndarray) -> tuple[int, float | None]:
    """(flips among the labels, share of them in the top 2 x flips suspects by held-out P(label))."""
    flipped = y_given != y_true
    if not flipped.any():
        return 0, None
    p = result.check  # what `train` stores for `suspects`
    p_label = np.where(y_given == 1, p, 1 - p)
    order = [i for i in np.argsort(p_label, kind="stable") if np.isfinite(p_label[i])]
    top = order[: 2 * int(flipped.sum())]
    return int(flipped.sum()), float(flipped[top].sum() / flipped.sum())


def one_size(
    world: World, test: World, n: int, strategy: str, seed: int, with_seed_recipe: bool, balance: bool = False
) -> dict:
    from imgrank.learn.evaluation import near_duplicate_groups

    rng = np.random.default_rng(1000 + seed)
    idx = STRATEGIES[strategy](world, n, rng)
    x, y, image = world.x[idx], world.y_given[idx], world.image[idx]
    config = TrainConfig(min_per_class=2, seed=seed, balance_blocks=balance)
    row: dict = {"n": n, "seed": seed, "delete": int(y.sum())}
    started = time.perf_counter()
    try:
        result = train_arrays(x, y, image, config, blocks=BLOCKS, library=library(world))
    except Exception as e:  # too few deletes among a handful of labels: say so in the table
        row["error"] = str(e)
        return row
    row["imgrank_seconds"] = time.perf_counter() - started
    row["recipe"] = result.recipe
    row["imgrank_ap"] = average_precision(test.y_true, predict(result.weights, test.x))
    groups = near_duplicate_groups(image, config.near_dup, config.max_group)
    row["fold_average_ap"] = average_precision(
        test.y_true, fold_average(x, y, groups, result, config, test.x, library(world))
    )
    row["logistic_ap"] = average_precision(test.y_true, predict(fit_logistic(image, y), test.image))
    if with_seed_recipe:
        p, secs = seed_recipe(x, y, test.x, SEED_RECIPE_BUDGET_S)
        row["seed_recipe_ap"] = None if p is None else average_precision(test.y_true, p)
        row["seed_recipe_seconds"] = secs
    row["flips"], row["flips_found"] = flips_found(result, y, world.y_true[idx])
    return row


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,50,100,200,500,2000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategy", default="random", choices=sorted(STRATEGIES))
    ap.add_argument("--pool", type=int, default=6000)
    ap.add_argument("--test", type=int, default=3000)
    ap.add_argument("--seed-recipe-seeds", type=int, default=1, help="run the seed recipe on this many seeds")
    ap.add_argument(
        "--balanced", action="store_true", help="one share of the prior per feature block (before issue 23)"
    )
    args = ap.parse_args()
    import torch

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for seed in range(args.seeds):
        world = make_world(args.pool + args.test, seed)
        # held-out photos: whole scenes the pool never saw, with their true labels
        last_pool_scene = world.scene[args.pool - 1]
        pool = world.scene <= last_pool_scene
        labelled = World(
            *(a[pool] for a in (world.x, world.image, world.y_true, world.y_given, world.scene, world.family))
        )
        test = World(
            *(
                a[~pool]
                for a in (world.x, world.image, world.y_true, world.y_given, world.scene, world.family)
            )
        )
        for n in sizes:
            row = one_size(
                labelled, test, n, args.strategy, seed, seed < args.seed_recipe_seeds, args.balanced
            )
            rows.append(row)
            print(
                json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
                flush=True,
            )
    summary = []
    for n in sizes:
        at = [r for r in rows if r["n"] == n]
        summary.append(
            {
                "n": n,
                "runs": sum("error" not in r for r in at),
                "imgrank_ap": mean(at, "imgrank_ap"),
                "fold_average_ap": mean(at, "fold_average_ap"),
                "logistic_ap": mean(at, "logistic_ap"),
                "seed_recipe_ap": mean(at, "seed_recipe_ap"),
                "flips_found": mean(at, "flips_found"),
                "flips_hit": sum(round(r["flips_found"] * r["flips"]) for r in at if r.get("flips")),
                "flips_total": sum(r.get("flips", 0) for r in at),
                "mlp_chosen": sum(r.get("recipe") == "mlp" for r in at),
                "imgrank_seconds": mean(at, "imgrank_seconds"),
            }
        )
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__}, no GPU"
    chance = float(np.mean(test.y_true))

    def f(v):
        return "    -" if v is None else f"{v:.3f}"

    print(
        f"\nmachine: {machine}; strategy: {args.strategy}; {args.seeds} seeds; "
        f"held-out chance AP {chance:.3f}"
    )
    print(
        f"{'labels':>7} {'imgrank':>8} {'fold-avg':>8} {'logistic':>8} {'seed MLP':>8}"
        f" {'flips found (of)':>15} {'MLP chosen':>10} {'train s':>8}"
    )
    for s in summary:
        print(
            f"{s['n']:>7} {f(s['imgrank_ap']):>8} {f(s['fold_average_ap']):>8} {f(s['logistic_ap']):>8}"
            f" {f(s['seed_recipe_ap']):>8} {f(s['flips_found']):>6} {s['flips_hit']:>3}/{s['flips_total']:<5}"
            f" {s['mlp_chosen']:>6}/{s['runs']:<3}"
            f" {f(s['imgrank_seconds']):>8}"
        )
    Path("bench-out").mkdir(exist_ok=True)
    out = {
        "machine": machine,
        "strategy": args.strategy,
        "seeds": args.seeds,
        "chance_ap": chance,
        "summary": summary,
        "runs": rows,
    }
    name = "bench_learn.json" if args.strategy == "random" else f"bench_learn-{args.strategy}.json"
    name = name.replace(".json", "-balanced.json") if args.balanced else name
    Path("bench-out", name).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten: bench-out/{name}")


if __name__ == "__main__":
    main()
