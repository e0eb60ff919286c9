"""Benchmark: near-duplicate grouping of N clustered 256-d vectors (dupes.near_groups), time and memory.

The vectors look like a photo library's: most photos alone, a third of them in bursts of 2-8 shots
a little apart (similarity ~0.97-0.99 to the burst's first), all on unit length. Each size runs in a
fresh process so its peak RSS is its own; the script prints a table (and writes JSON) of seconds,
the peak resident memory above the vectors themselves, and how many true bursts came out whole.
An all-pairs similarity matrix of 100,000 photos would take 100,000² × 4 bytes = 40 GB (or 5·10⁹
dot products in blocks); grouping here grows as N·log N in time and N·k in memory.

    python scripts/bench_dupes.py [--sizes 25000,50000,100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM = 256


def library(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors shaped like CLIP image vectors of a photo library, and the true burst of each.

    Photos fall into topics (n/100 of them: a place, a person, a pet), each spread over its own
    16-d subspace, around a direction all photos share (so two unrelated photos sit near 0.4, two of
    one topic near 0.8). A third of the photos come in bursts of 2-8 shots a little apart
    (~0.98-0.99 to the burst's first); the rest are alone.
    """
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=DIM)
    shared /= np.linalg.norm(shared)
    topic = rng.integers(0, max(1, n // 100), n)
    out = np.empty((n, DIM), np.float32)
    for t in np.unique(topic):
        rows = np.flatnonzero(topic == t)
        centre = rng.normal(size=DIM) / np.sqrt(DIM)
        basis = rng.normal(size=(16, DIM)) / np.sqrt(DIM)
        out[rows] = 0.8 * shared + 0.7 * centre + rng.normal(0, 0.35, size=(len(rows), 16)) @ basis
    truth = np.full(n, -1)
    i, g = 0, 0
    while i < n // 3:
        size = min(int(rng.integers(2, 9)), n // 3 - i)
        first = out[i] / np.linalg.norm(out[i])
        out[i : i + size] = first + rng.normal(0, 0.13 / np.sqrt(DIM), size=(size, DIM))
        truth[i : i + size] = g
        i, g = i + size, g + 1
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, truth


def one(n: int) -> dict:
    from imgrank.dupes import near_groups

    x, truth = library(n)
    before_kb = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() // 1024
    start, cpu = time.perf_counter(), time.process_time()
    group = near_groups(x, threshold=0.95)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    whole = sum(
        1 for g in range(truth.max() + 1) if len(set(group[truth == g])) == 1 and group[truth == g][0] >= 0
    )
    return {
        "n": n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "extra_rss_mb": round((peak_kb - before_kb) / 1024, 1),
        "vectors_mb": round(x.nbytes / 2**20, 1),
        "bursts": int(truth.max() + 1),
        "bursts_whole": whole,
        "singles_grouped": int((group[truth == -1] >= 0).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="25000,50000,100000")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout))
    print(
        f"{'photos':>8} {'seconds':>8} {'CPU s':>8} {'extra RSS MB':>13} {'vectors MB':>11} "
        f"{'bursts whole':>14} {'singles grouped':>16}"
    )
    for r in rows:
        print(
            f"{r['n']:>8} {r['seconds']:>8} {r['cpu_seconds']:>8} {r['extra_rss_mb']:>13} "
            f"{r['vectors_mb']:>11} {r['bursts_whole']:>7}/{r['bursts']:<6} {r['singles_grouped']:>16}"
        )
    machine = f"{platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}"
    print(machine)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
