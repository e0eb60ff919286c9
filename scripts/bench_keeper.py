"""Benchmark: which shot of a burst the owner keeps, learned from the bursts they already sorted
(imgrank.learn.keeper), against the largest file (Immich's rule), the head's score and a random pick.

Each world is a library of bursts (3-7 shots of one scene; image vectors ~0.97 apart, as `dupes`
groups them). Every shot has hidden traits: blur, exposure error, framing (how wide), a pleasing
moment. The image vector shows each trait along its own hidden direction (weakly, under the shot's
other differences), and the cheap facts show some: sharpness (variance of the Laplacian) falls with
blur, the mean grey level moves with exposure, pixels are the camera's (an edited crop has fewer).
File size rises with pixels and a little with sharpness and texture, so it says little about which
shot is best. The owner keeps one shot per burst by their own rule, with noise:
- quality: the best moment, least blur and exposure error (vector and facts together);
- sharpest: the sharpest shot by the measured sharpness;
- framing: the widest framing (seen only in the image vector);
- moment: the pleasing moment alone (a direction on the vector nothing cheap measures).

For each world, seed and n (bursts the owner has labelled: the kept shot `keep`, the others
`delete`), the keeper accuracy on 300 bursts nobody labelled:
- learned: imgrank.learn.keeper.fit on the labelled bursts' preferences, falling back to the head below
  keeper.MIN_GROUPS groups (what imgrank ships);
- head: the lowest P(delete) of a per-photo classifier trained on the same labels (a stand-in for
  the head: scikit-learn's StandardScaler + LogisticRegression on the vector and the facts);
- largest: the largest file; random: a shot at random (its expected accuracy, 1/size).

    python scripts/bench_keeper.py [--seeds 20] [--groups 5,10,20,40] [--worlds quality,sharpest,...]

Prints mean ± standard error and the paired difference learned − largest; writes
bench-out/bench_keeper.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from imgrank.learn import keeper  # noqa: E402

DIM = 256  # uform3 small's image vector
TEST_GROUPS = 300
WORLDS = ("quality", "sharpest", "framing", "moment")
TRAITS = ("blur", "exposure", "framing", "moment")
STRATEGIES = ("learned", "head", "largest", "random")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_world(world: str, n_groups: int, seed: int) -> dict:
    """Bursts with their vectors, facts, sizes and the shot the owner keeps in each."""
    rng = np.random.default_rng([seed, WORLDS.index(world)])
    directions = unit(rng.normal(size=(len(TRAITS), DIM)))  # where each trait shows on the vector
    cone = unit(rng.normal(size=DIM))
    rows, group, keep = [], [], []
    for g in range(n_groups):
        k = int(rng.integers(3, 8))
        centre = unit(0.9 * cone + unit(rng.normal(size=DIM)))
        trait = rng.normal(size=(k, len(TRAITS)))
        trait[:, 0] = np.abs(trait[:, 0])  # blur: none or some
        other = rng.normal(0, 0.2 / np.sqrt(DIM), size=(k, DIM))  # the shots' other differences
        x = unit(centre + other + 0.04 * trait @ directions)
        sharp = np.exp(rng.normal(5.5, 1.0) - 0.8 * trait[:, 0] + rng.normal(0, 0.3, k))
        mean = np.clip(120 + rng.normal(0, 15) + 35 * trait[:, 1] + rng.normal(0, 5, k), 1, 254)
        pixels = np.full(k, [12e6, 24e6, 8e6][int(rng.integers(3))])
        cropped = rng.random(k) < 0.15  # an edited crop: fewer pixels, tighter framing
        pixels[cropped] *= rng.uniform(0.3, 0.8, cropped.sum())
        trait[cropped, 2] -= 1.0
        texture = rng.normal(0, 0.25, k)  # detail in the scene: bytes, unrelated to the owner
        size = pixels * 0.35 * np.exp(0.1 * np.log(sharp) + texture + rng.normal(0, 0.1))
        utility = {
            "quality": trait[:, 3] - trait[:, 0] - np.abs(trait[:, 1]),
            "sharpest": np.log(sharp),
            "framing": trait[:, 2],
            "moment": trait[:, 3],
        }[world]
        chosen = np.argmax(utility + rng.normal(0, 0.3 * utility.std() + 1e-9, k))
        facts = keeper.facts(
            np.sqrt(pixels * 1.5), np.sqrt(pixels / 1.5), size, sharp, np.zeros(k), np.zeros(k), mean
        )
        rows.append((x, facts, size))
        group += [g] * k
        keep += [i == chosen for i in range(k)]
    return {
        "image": np.concatenate([r[0] for r in rows]).astype(np.float32),
        "facts": np.concatenate([r[1] for r in rows]),
        "size": np.concatenate([r[2] for r in rows]),
        "group": np.array(group),
        "keep": np.array(keep),
    }


def accuracy(test: dict, best_row: np.ndarray) -> float:
    """Share of test groups whose chosen row is the shot the owner keeps."""
    groups = np.unique(test["group"])
    return float(np.mean([test["keep"][best_row[np.flatnonzero(test["group"] == g)[0]]] for g in groups]))


def head_scores(train: dict, test: dict) -> np.ndarray:
    """P(delete) of the stand-in head: a per-photo classifier on the vector and the facts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def x(d):
        return np.hstack([d["image"], np.nan_to_num(d["facts"])])

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x(train), ~train["keep"])
    return model.predict_proba(x(test))[:, 1]


def one(world: str, seed: int, n: int) -> dict:
    data = make_world(world, n + TEST_GROUPS, seed)
    inside = data["group"] < n
    train = {k: v[inside] for k, v in data.items()}
    test = {k: v[~inside] for k, v in data.items()}
    head = head_scores(train, test)
    winners, losers = keeper.preferences(train["group"], train["keep"], ~train["keep"])
    started = time.perf_counter()
    model = keeper.fit(train["image"], train["facts"], winners, losers, train["group"][winners])
    fit_s = time.perf_counter() - started
    utility = model.utility(test["image"], test["facts"], test["group"]) if model else None
    sizes = np.bincount(test["group"])[np.unique(test["group"])]
    return {
        "world": world,
        "seed": seed,
        "groups": n,
        "learned": accuracy(test, keeper.keepers(test["group"], utility, head)),
        "head": accuracy(test, keeper.keepers(test["group"], None, head)),
        "largest": accuracy(test, keeper.keepers(test["group"], None, -test["size"])),
        "random": float(np.mean(1.0 / sizes)),
        "fit_s": fit_s,
    }


def summary(rows: list[dict], world: str, n: int) -> dict:
    mine = [r for r in rows if r["world"] == world and r["groups"] == n]
    out = {"world": world, "groups": n, "seeds": len(mine)}
    for s in STRATEGIES:
        v = np.array([r[s] for r in mine])
        out[s] = (float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))))
    diff = np.array([r["learned"] - r["largest"] for r in mine])
    out["learned-largest"] = (float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))))
    diff = np.array([r["learned"] - r["head"] for r in mine])
    out["learned-head"] = (float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))))
    out["fit_s"] = float(np.mean([r["fit_s"] for r in mine]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--groups", default="5,10,20,40")
    ap.add_argument("--worlds", default=",".join(WORLDS))
    ap.add_argument("--out", default="bench-out/bench_keeper.json")
    args = ap.parse_args()
    worlds = args.worlds.split(",")
    if unknown := set(worlds) - set(WORLDS):
        sys.exit(f"unknown world(s): {', '.join(sorted(unknown))}; choose from {', '.join(WORLDS)}")
    sizes = [int(v) for v in args.groups.split(",")]
    started = time.time()
    rows = [one(w, seed, n) for w in worlds for n in sizes for seed in range(args.seeds)]
    table = [summary(rows, w, n) for w in worlds for n in sizes]

    def pm(v):
        return f"{v[0]:.3f} ± {v[1]:.3f}"

    print(
        f"{'world':<9} {'groups':>6}  {'learned':>13}  {'head':>13}  {'largest':>13}  {'random':>13}"
        f"  {'learned-largest':>15}  {'learned-head':>15}"
    )
    for t in table:
        print(
            f"{t['world']:<9} {t['groups']:>6}  "
            + "  ".join(f"{pm(t[s]):>13}" for s in STRATEGIES)
            + f"  {pm(t['learned-largest']):>15}  {pm(t['learned-head']):>15}"
        )
    seconds = time.time() - started
    print(f"{args.seeds} seeds, {TEST_GROUPS} held-out bursts each, {seconds:.0f} s on {platform.node()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"table": table, "rows": rows, "seconds": seconds, "cpus": os.cpu_count(), "args": vars(args)},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
