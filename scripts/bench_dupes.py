"""Benchmark: near-duplicate grouping of N clustered 256-d vectors (dupes.near_groups), time and memory.

The vectors look like a photo library's: most photos alone, a third of them in bursts of 2-8 shots
a little apart (similarity ~0.97-0.99 to the burst's first), all on unit length. Each size runs in a
fresh process so its peak RSS is its own; the script prints a Markdown table (and writes JSON) of
seconds (wall and CPU, and per step: cells, search within them, closing pairs, grouping), the seconds
`refresh` spends comparing 100 new photos with all, the peak resident memory above the vectors
themselves, how many true bursts came out whole, and (up to --check-up-to) whether the grouping is
the exact one; then the exponent of a power law fitted to the times.
An all-pairs similarity matrix of 100,000 photos would take 100,000² × 4 bytes = 40 GB (or 5·10⁹
dot products in blocks); grouping here grows as N·log N in time and N·k in memory.

    python scripts/bench_dupes.py [--sizes 12500,25000,50000,100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM = 256
THRESHOLD = 0.95


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


def rss_kb(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(n: int, check: bool) -> dict:
    """Group n photos in this process: seconds per step, CPU seconds, peak memory, bursts found;
    with `check`, also how far the grouping is from the exact one (all pairs)."""
    from imgrank.dupes import leaders, near_groups
    from imgrank.learn.neighbours import EXACT_BELOW, exact_pairs, index_pairs

    assert n > EXACT_BELOW, f"sizes above {EXACT_BELOW} take the index path"
    x, truth = library(n)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    before_kb = rss_kb()
    start, cpu, clock = time.perf_counter(), time.process_time(), {}
    a, b, sim = index_pairs(x, THRESHOLD, clock)
    tick = time.perf_counter()
    group = leaders(n, a, b, sim)
    clock["group"] = time.perf_counter() - tick
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_kb = rss_kb("VmHWM")
    tick = time.perf_counter()
    exact_pairs(x, THRESHOLD, rows=np.arange(n - 100, n))  # what `refresh` does for 100 new photos
    new_100 = time.perf_counter() - tick
    whole = sum(
        1 for g in range(truth.max() + 1) if len(set(group[truth == g])) == 1 and group[truth == g][0] >= 0
    )
    row = {
        "n": n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        **{k: round(v, 2) for k, v in clock.items()},
        "refresh_100_new": round(new_100, 3),
        "extra_rss_mb": round((peak_kb - before_kb) / 1024, 1),
        "vectors_mb": round(x.nbytes / 2**20, 1),
        "pairs": len(a),
        "bursts": int(truth.max() + 1),
        "bursts_whole": whole,
        "singles_grouped": int((group[truth == -1] >= 0).sum()),
    }
    if check:
        ea, eb, _ = exact_pairs(x, THRESHOLD)
        found = set(zip(a.tolist(), b.tolist(), strict=True))
        row["pairs_missed"] = len(set(zip(ea.tolist(), eb.tolist(), strict=True)) - found)
        row["same_as_exact"] = bool((near_groups(x, THRESHOLD, exact=True) == group).all())
    return row


def exponent(rows: list[dict], key: str) -> float:
    """The slope of log(key) against log(n): time grows as n to this power."""
    return float(np.polyfit(np.log([r["n"] for r in rows]), np.log([r[key] for r in rows]), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="12500,25000,50000,100000")
    ap.add_argument(
        "--check-up-to", type=int, default=25000, help="compare with the exact grouping up to here"
    )
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.check)))
        return
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        argv = [sys.executable, __file__, "--one", str(n)] + (["--check"] if n <= args.check_up_to else [])
        rows.append(json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        "| photos | seconds | CPU s | cells | search | check | group | 100 new | extra RSS MB "
        "| bursts whole | singles grouped | same as exact |"
    )
    print("|" + "---|" * 12)
    for r in rows:
        same = {True: "yes", False: f"no ({r.get('pairs_missed')} pairs missed)"}.get(
            r.get("same_as_exact"), "-"
        )
        print(
            f"| {r['n']:,} | {r['seconds']} | {r['cpu_seconds']} | {r['build']} | {r['search']} "
            f"| {r['check']} | {r['group']} | {r['refresh_100_new']} | {r['extra_rss_mb']} "
            f"| {r['bursts_whole']:,}/{r['bursts']:,} | {r['singles_grouped']} | {same} |"
        )
    if len(rows) > 1:
        wall, cpu = exponent(rows, "seconds"), exponent(rows, "cpu_seconds")
        print(f"time grows as N^{wall:.2f} (CPU time as N^{cpu:.2f})")
    load = Path("/proc/loadavg").read_text().split()[:3]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {' '.join(load)}"
    machine += f", python {platform.python_version()}"
    print(machine)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
