"""Benchmark: `order` then `restore` of N files against a bare `os.utime` loop over the same files.

The bare loop is the least any tool can do for the same result: for each file, stat (for its
access time, which must stay) and utime to the new time; then the same again to put the old
time back. imgrank does that plus its ranking query, the database records written before any
touch, and each touch through the file's own descriptor (open, a check of it just before, the
time set, read back, close). Both run on the same files, one after the other, `--rounds` times; the
figure is the median over rounds of (order + restore) / bare (target: at most 3).

The files are small real files in a temporary folder on the disk given by --dir; the index rows
and scores are written straight into a fresh database (no embedding: it plays no part here).

    python scripts/bench_order.py [-n 100000] [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgrank import index  # noqa: E402
from imgrank.order import order, restore  # noqa: E402
from imgrank.store.db import open_db  # noqa: E402

DAY = 86_400 * 10**9


def make_files(root: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        folder = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        p = folder / f"IMG_{i:06d}.jpg"
        p.write_bytes(b"x")
        t = 1_500_000_000 * 10**9 + random.randrange(2000 * DAY)
        os.utime(p, ns=(t + 17, t))
        paths.append(str(p))
    return paths


def index_rows(db, root: Path, paths: list[str]) -> None:
    index.add_roots(db, [root])
    root_id = db.execute("SELECT id FROM roots").fetchone()[0]
    rows, scores = [], []
    for i, p in enumerate(paths):
        st = os.stat(p)
        rows.append((p, root_id, st.st_size, st.st_mtime_ns, f"sha{i}"))
        scores.append((f"sha{i}", random.random()))
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO files (path, root_id, size, mtime_ns, sha256, state) VALUES (?, ?, ?, ?, ?, 'ok')",
            rows,
        )
        db.conn.executemany("INSERT INTO scores (sha256, run_id, score, at) VALUES (?, 1, ?, 0)", scores)


def bare(paths: list[str]) -> float:
    """Set every mtime to a new time, keeping the atime; then put the old time back."""
    start = time.perf_counter()
    now = time.time_ns() // 2_000_000_000 * 2_000_000_000
    old = []
    for i, p in enumerate(paths):
        st = os.stat(p)
        old.append(st.st_mtime_ns)
        os.utime(p, ns=(st.st_atime_ns, now - 2_000_000_000 * i))
    for p, m in zip(paths, old, strict=True):
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, m))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="Where to make the files.")
    args = parser.parse_args()
    random.seed(0)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "photos"
        os.environ["IMGRANK_HOME"] = str(Path(tmp) / "home")
        os.environ["XDG_STATE_HOME"] = str(Path(tmp) / "state")  # its store is not listed as the user's
        t0 = time.perf_counter()
        paths = make_files(root, args.n)
        db = open_db()
        index_rows(db, root, paths)
        print(
            f"made {args.n} files and their index rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr
        )
        before = {p: (s.st_atime_ns, s.st_mtime_ns) for p in paths for s in [os.stat(p)]}

        bare_s, order_s, restore_s = [], [], []
        for r in range(args.rounds):
            bare_s.append(bare(paths))
            t = time.perf_counter()
            result = order(db)
            order_s.append(time.perf_counter() - t)
            assert result.touched == args.n and not result.failed, result.as_dict()
            t = time.perf_counter()
            back = restore(db)
            restore_s.append(time.perf_counter() - t)
            assert back.restored == args.n and not back.failed
            print(
                f"round {r + 1}: bare {bare_s[-1]:.2f} s, order {order_s[-1]:.2f} s, "
                f"restore {restore_s[-1]:.2f} s",
                file=sys.stderr,
            )

        # The daemon's reorder (--keep-places) after one photo's score changes, as when a photo
        # arrives or is renamed: how many files it touches (all of them without it), laid out
        # with the default step (no room between neighbours) and with the daemon's 10 s.
        keep = {}
        for step in (2.0, 10.0):
            order(db, step=step, now_ns=time.time_ns() - 3600 * 10**9)  # laid out an hour ago
            touched, secs = [], []
            for _ in range(args.rounds):
                sha = f"sha{random.randrange(args.n)}"
                db.execute("UPDATE scores SET score = ? WHERE sha256 = ?", [random.random(), sha])
                t = time.perf_counter()
                result = order(db, step=step, keep_places=True)
                secs.append(time.perf_counter() - t)
                touched.append(result.touched)
            keep[step] = (statistics.median(touched), statistics.median(secs))
            print(f"keep-places, step {step:g} s, after one score change: touched {touched}", file=sys.stderr)
        assert restore(db).restored == args.n
        exact = all((s.st_atime_ns, s.st_mtime_ns) == before[p] for p in paths for s in [os.stat(p)])

    b, o, rs = statistics.median(bare_s), statistics.median(order_s), statistics.median(restore_s)
    out = {
        "files": args.n,
        "rounds": args.rounds,
        "bare_utime_loop_s": round(b, 3),
        "order_s": round(o, 3),
        "restore_s": round(rs, 3),
        "ratio": round(
            statistics.median((x + y) / z for x, y, z in zip(order_s, restore_s, bare_s, strict=True)), 2
        ),
        "every_time_back_exactly": exact,
        "keep_places_touched_median": {f"step_{k:g}s": v[0] for k, v in keep.items()},
        "keep_places_s": {f"step_{k:g}s": round(v[1], 3) for k, v in keep.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    print(f"bare os.utime loop, set + put back: {b:8.2f} s")
    print(f"imgrank order + restore:            {o + rs:8.2f} s  (order {o:.2f} s, restore {rs:.2f} s)")
    print(f"ratio (median of rounds): {out['ratio']}x (target: at most 3x)")
    print(f"every atime and mtime back exactly: {exact}")
    for step, (touched, secs) in keep.items():
        print(
            f"reorder --keep-places --step {step:g} after one score change: {touched:g} of "
            f"{args.n} files touched (median), {secs:.2f} s; without --keep-places: all {args.n}"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
