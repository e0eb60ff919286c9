"""Benchmark suite: does the active head rank new photos as well as standard learners, on every kind of
folder and taste, from 20 labels to 500?

Folders and tastes are in suite_folders.py (seven generators: kinds, quality, mixed, name, image-only,
relative within bursts, rare deletes from 1:4 to 1:20). For each generator, seed and size, labels are
drawn at random from the labelling pool (5% of them flipped), and every learner is scored by its
average precision on held-out photos from events no label saw, on the SAME 515 features:
- imgrank: `train_arrays`, the whole recipe `imgrank train` runs (the active head);
- pipeline: make_pipeline(StandardScaler(), LogisticRegressionCV(scoring="average_precision"));
- image LR: L2 logistic regression (C=1, classes balanced) on the standardised image vector alone;
- kNN: cosine k-nearest neighbours (k = 10 or fewer, by distance) on the standardised features.
A draw with fewer than 2 deletes or 2 keeps among its labels is skipped for every learner alike.
Also: the share of flipped labels `suspects` puts in its first 2 x flips, the share of the folder
that prints as 1.000, and imgrank's training seconds.

    nice -n 10 python scripts/bench_suite.py --seeds 20 --jobs 2 [--sizes 20,30,50,100,200,500]
        [--generators kinds,quality,...] [--out bench-out/bench_suite.json]

Prints per generator and size the mean +- standard error of each learner's AP, and the mean paired
difference imgrank - reference +- its standard error; writes every run (with the head each draw chose,
who chose it, the evidence and the held-out deletes) and the summary as JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per job
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from multiprocessing import Pool  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from suite_folders import BLOCKS, GENERATORS, IMAGE_DIM, make  # noqa: E402

REFERENCES = ("pipeline", "image_lr", "knn")
LEARNERS = ("imgrank", *REFERENCES)


def references(x, y, image, x_test, image_test) -> dict[str, np.ndarray]:
    """Held-out scores of the scikit-learn references, fit on the labelled rows."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, x_test = np.nan_to_num(x), np.nan_to_num(x_test)
    out = {}
    with warnings.catch_warnings():  # folds without a delete, slow convergence: scored as they come
        warnings.simplefilter("ignore")
        cv = min(5, int(y.sum()), int(len(y) - y.sum()))
        pipe = make_pipeline(
            StandardScaler(), LogisticRegressionCV(scoring="average_precision", cv=cv, max_iter=1000)
        )
        out["pipeline"] = pipe.fit(x, y).predict_proba(x_test)[:, 1]
        lr = make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        )
        out["image_lr"] = lr.fit(image, y).predict_proba(image_test)[:, 1]
        knn = make_pipeline(
            StandardScaler(), KNeighborsClassifier(min(10, len(y)), metric="cosine", weights="distance")
        )
        out["knn"] = knn.fit(x, y).predict_proba(x_test)[:, 1]
    return out


def flips_found(check: np.ndarray, y_given: np.ndarray, y_true: np.ndarray) -> float | None:
    """Share of the flipped labels among the first 2 x flips in `suspects`' order (`suspect_order`)."""
    from imgrank.learn.suspects import suspect_order

    flipped = y_given != y_true
    if not flipped.any():
        return None
    order = suspect_order(check, y_given)
    return float(flipped[order[: 2 * int(flipped.sum())]].sum() / flipped.sum())


def one_task(task: tuple[str, int, list[int], int, int]) -> list[dict]:
    """Every size for one generator and seed (one folder, built once)."""
    from imgrank.errors import ImgrankError
    from imgrank.learn.evaluation import average_precision
    from imgrank.learn.logistic import predict
    from imgrank.train import TrainConfig, train_arrays

    generator, seed, sizes, n_pool, n_test = task
    pool, test, rate = make(generator, seed, n_pool, n_test)
    everyone = np.concatenate([pool.x, test.x])
    library = everyone[:, : sum(BLOCKS)]
    rows = []
    for n in sizes:
        rng = np.random.default_rng([seed, n])
        idx = rng.choice(len(pool.x), min(n, len(pool.x)), replace=False)
        x, y, image = pool.x[idx], pool.y_given[idx], pool.image[idx]
        row = {"generator": generator, "seed": seed, "n": n, "deletes": int(y.sum()), "rate": rate}
        rows.append(row)
        if min(y.sum(), len(y) - y.sum()) < 2:
            row["skipped"] = "fewer than 2 deletes or keeps"
            continue
        started = time.perf_counter()
        try:
            result = train_arrays(
                x, y, image, TrainConfig(min_per_class=2, seed=seed), blocks=BLOCKS, library=library
            )
        except ImgrankError as e:
            row["skipped"] = str(e)
            continue
        row["seconds"] = time.perf_counter() - started
        row["recipe"] = result.recipe
        base = result.metrics["baseline"]
        row["l2"], row["chosen_by"] = base.get("l2"), base["chosen_by"]
        row["evidence"], row["held_deletes"] = base["evidence"], result.counts["held_out"]["delete"]
        scores = {"imgrank": predict(result.weights, test.x)}
        scores |= references(x, y, image, test.x, test.image[:, :IMAGE_DIM])
        for name, p in scores.items():
            row[name] = average_precision(test.y_true, p)
        row["flips_found"] = flips_found(result.check, y, pool.y_true[idx])
        from imgrank.model import Head

        head = Head(
            result.weights,
            {"n_layers": 1 if result.recipe == "logistic" else 2, "calibration": result.calibration},
        )
        row["printed_one"] = float(np.mean(np.round(head.predict(everyone), 3) >= 1.0))
    return rows


def mean_se(values: list[float]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None], float)
    if not len(v):
        return None, None
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def summarise(rows: list[dict], generators: list[str], sizes: list[int]) -> list[dict]:
    summary = []
    for g in generators:
        for n in sizes:
            at = [r for r in rows if r["generator"] == g and r["n"] == n and "skipped" not in r]
            s: dict = {
                "generator": g,
                "n": n,
                "runs": len(at),
                "skipped": sum(1 for r in rows if r["generator"] == g and r["n"] == n) - len(at),
            }
            for name in LEARNERS:
                s[name] = mean_se([r.get(name) for r in at])
            for name in REFERENCES:
                s["vs_" + name] = mean_se(
                    [
                        r["imgrank"] - r[name]
                        for r in at
                        if r.get("imgrank") is not None and r.get(name) is not None
                    ]
                )
            means = [s[name][0] for name in REFERENCES if s[name][0] is not None]
            s["best_reference"] = max(means) if means else None
            s["flips_found"] = mean_se([r.get("flips_found") for r in at])
            s["printed_one"] = mean_se([r.get("printed_one") for r in at])
            s["seconds"] = mean_se([r.get("seconds") for r in at])
            s["mlp_chosen"] = sum(r.get("recipe") == "mlp" for r in at)
            if s["imgrank"][0] is not None and means:
                s["meets_best"] = s["imgrank"][0] >= s["best_reference"] - 0.01
                s["meets_pipeline"] = s["imgrank"][0] >= s["pipeline"][0] - 0.02
            summary.append(s)
    return summary


def table(summary: list[dict]) -> str:
    def ms(v):
        return "-" if v[0] is None else f"{v[0]:.3f} ± {v[1]:.3f}"

    def d(v):
        return "-" if v[0] is None else f"{v[0]:+.3f} ± {v[1]:.3f}"

    head = (
        "| folder | labels | runs | imgrank | pipeline | image LR | kNN | imgrank − pipeline "
        "| imgrank − best other | targets | flips found | printed 1.000 | train s |"
    )
    lines = [head, "|" + "---|" * 13]
    for s in summary:
        if not s["runs"]:
            lines.append(f"| {s['generator']} | {s['n']} | 0 ({s['skipped']} skipped) |" + " |" * 10)
            continue
        gap = s["imgrank"][0] - s["best_reference"]
        ok = "yes" if s.get("meets_best") and s.get("meets_pipeline") else "**no**"
        lines.append(
            f"| {s['generator']} | {s['n']} | {s['runs']} | {ms(s['imgrank'])} | {ms(s['pipeline'])} "
            f"| {ms(s['image_lr'])} | {ms(s['knn'])} | {d(s['vs_pipeline'])} | {gap:+.3f} | {ok} "
            f"| {ms(s['flips_found'])} | {s['printed_one'][0]:.1%} | {s['seconds'][0]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--sizes", default="20,30,50,100,200,500")
    ap.add_argument("--generators", default=",".join(GENERATORS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--pool", type=int, default=1500, help="photos labels are drawn from")
    ap.add_argument("--test", type=int, default=1000, help="held-out photos (whole events)")
    ap.add_argument("--out", default="bench-out/bench_suite.json")
    ap.add_argument("--table", help="only print the table of a (partial) JSON this script wrote")
    args = ap.parse_args()
    if args.table:
        done = json.loads(Path(args.table).read_text())
        gens = list(dict.fromkeys(r["generator"] for r in done["runs"]))
        sizes = sorted({r["n"] for r in done["runs"]})
        seeds = sorted({r["seed"] for r in done["runs"]})
        print(f"{len(done['runs'])} runs, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)})\n")
        print(table(summarise(done["runs"], gens, sizes)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    generators = [g for g in args.generators.split(",") if g]
    unknown = set(generators) - set(GENERATORS)
    if unknown:
        ap.error(f"unknown generators: {', '.join(sorted(unknown))}; known: {', '.join(GENERATORS)}")
    tasks = [
        (g, s, sizes, args.pool, args.test)
        for s in range(args.first_seed, args.first_seed + args.seeds)
        for g in generators
    ]
    started = time.time()
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Pool(args.jobs) as pool:
        for done in pool.imap_unordered(one_task, tasks):
            rows += done
            # every finished folder is on disk at once: a run cut short still leaves its table
            out.write_text(json.dumps({"args": vars(args), "partial": True, "runs": rows}) + "\n")
            print(
                f"{done[0]['generator']} seed {done[0]['seed']}: "
                + ", ".join(
                    f"{r['n']}: {r.get('imgrank', 0) or 0:.2f}/{r.get('pipeline', 0) or 0:.2f}" for r in done
                ),
                file=sys.stderr,
                flush=True,
            )
    summary = summarise(rows, generators, sizes)
    import sklearn

    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), scikit-learn {sklearn.__version__}, "
        f"{args.jobs} jobs, {time.time() - started:.0f} s"
    )
    print(f"\n{machine}; {args.seeds} seeds; sizes {args.sizes}\n")
    print(table(summary))
    for s in summary:
        if s["runs"] and not (s.get("meets_best") and s.get("meets_pipeline")):
            print(f"target missed: {s['generator']} at {s['n']} labels", file=sys.stderr)
    out.write_text(
        json.dumps({"machine": machine, "args": vars(args), "summary": summary, "runs": rows}, indent=1)
        + "\n"
    )
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
