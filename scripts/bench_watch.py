"""Benchmark: the daemon with the real-shape model (uform3 small layout, random weights).

1. builds the model (`imgrank.testing.tinymodel.build_model(dir, shape="small")`), scans a folder of
   camera-sized JPEGs, labels half of them and trains a head (`imgrank train`, torch, in its own process);
2. starts `python -m imgrank watch ROOT` (default --settle 2) as a subprocess;
3. latency: copies a photo into the root (closed when the copy returns) and times until its score
   is in the database and until `order` has given it its place (its mtime is the one recorded in
   `mtimes`). Trials are spaced by the reorder interval (default: the daemon's own, 30 s), so
   each photo arrives as one would on a quiet day, and is placed by the daemon's default rules;
4. idle CPU over 60 s from /proc/PID/stat, and resident memory from /proc/PID/status;
5. stops it with SIGTERM and times the exit.

    python scripts/bench_watch.py [--photos 40] [--trials 5] [--idle 60] [--reorder-interval 30]

Prints a table and writes bench-out/bench_watch.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def camera_photo(path: Path, seed: int, size=(4000, 3000)) -> Path:
    """A smooth 12-megapixel JPEG (a few MB, like a phone photo) whose content differs with the seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    noise = rng.integers(-6, 7, size=(size[1], size[0], 3), dtype=np.int16)  # sensor grain
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def query(db: Path, sql: str, params=()) -> list:
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def wait_for(condition, timeout: float, every: float = 0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return None


def placed_in_order(db: Path, path: Path) -> bool:
    """Has `order` given this file its place: its mtime on disk is the one imgrank recorded?"""
    rows = query(db, "SELECT set_ns FROM mtimes WHERE path = ?", [str(path)])
    return bool(rows) and path.stat().st_mtime_ns == rows[0][0]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def imgrank(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgrank", "-q", *args], env=env, capture_output=True, text=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=40, help="photos in the root before the daemon starts")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--reorder-interval", type=float, default=30.0, help="the daemon's default")
    parser.add_argument("--out", default="bench-out/bench_watch.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    root, staged, home = work / "photos", work / "staged", work / "home"
    env = dict(os.environ, IMGRANK_HOME=str(home), PYTHONUNBUFFERED="1")
    db = home / "imgrank.db"
    out: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    }
    try:
        t = time.monotonic()
        from imgrank.testing.tinymodel import build_model

        env["IMGRANK_MODEL"] = str(build_model(work / "model", shape="small"))
        print(f"model built in {time.monotonic() - t:.1f}s", file=sys.stderr)
        for i in range(args.photos):
            camera_photo(root / f"IMG_{i:04}.jpg", seed=i)
        for i in range(args.trials):
            camera_photo(staged / f"NEW_{i:04}.jpg", seed=1000 + i)
        out["photo_bytes"] = (root / "IMG_0000.jpg").stat().st_size

        t = time.monotonic()
        proc = imgrank("scan", str(root), env=env)
        assert proc.returncode == 0, proc.stderr
        out["scan_seconds"] = round(time.monotonic() - t, 2)
        half = sorted(root.iterdir())
        for label, paths in (("delete", half[::2]), ("keep", half[1::2])):
            proc = imgrank("relabel", label, *map(str, paths), env=env)
            assert proc.returncode == 0, proc.stderr
        out["head"] = train_head(env)

        daemon = subprocess.Popen(
            [sys.executable, "-m", "imgrank", "watch", str(root), "--settle", str(args.settle),
             "--reorder-interval", str(args.reorder_interval), "--retrain-after", "0"],
            env=env, stderr=open(work / "watch.log", "w"),
        )  # fmt: skip
        pid = daemon.pid
        try:
            t = time.monotonic()
            ok = wait_for(lambda: query(db, "SELECT pid FROM daemon WHERE pid = ?", [pid]), 120)
            assert ok, (work / "watch.log").read_text()
            out["startup_seconds"] = round(time.monotonic() - t, 2)
            time.sleep(max(args.reorder_interval, 2.0) + 1)  # let the catch-up's reorder pass

            trials = []
            for src in sorted(staged.iterdir()):
                sha = hashlib.sha256(src.read_bytes()).hexdigest()
                dest = root / src.name
                shutil.copy(src, dest)  # the copy has closed the file when this returns
                t0 = time.monotonic()
                scored = wait_for(
                    lambda sha=sha: query(db, "SELECT 1 FROM scores WHERE sha256 = ?", [sha]), 60
                )
                t_score = time.monotonic() - t0 if scored else None
                placed = wait_for(lambda dest=dest: placed_in_order(db, dest), 60)
                t_order = time.monotonic() - t0 if placed else None
                trials.append({"score_s": t_score, "order_s": t_order})
                print(f"trial {src.name}: score {t_score}, order {t_order}", file=sys.stderr)
                time.sleep(args.reorder_interval + 0.5)
            out["trials"] = trials

            rss_loaded = status_kb(pid, "VmRSS")
            time.sleep(2)
            ticks0, t0 = cpu_ticks(pid), time.monotonic()
            time.sleep(args.idle)
            ticks1, t1 = cpu_ticks(pid), time.monotonic()
            hz = os.sysconf("SC_CLK_TCK")
            out["idle_seconds"] = round(t1 - t0, 1)
            out["idle_cpu_percent_of_core"] = round(100 * (ticks1 - ticks0) / hz / (t1 - t0), 3)
            out["rss_mb"] = round(max(rss_loaded, status_kb(pid, "VmRSS")) / 1024, 1)
            out["peak_rss_mb"] = round(status_kb(pid, "VmHWM") / 1024, 1)
            counters = json.loads(query(db, "SELECT counters FROM daemon")[0][0])
            out["torch_in_daemon"] = counters.get("torch_loaded")

            t = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            out["sigterm_exit_code"] = daemon.wait(timeout=10)
            out["sigterm_seconds"] = round(time.monotonic() - t, 2)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    score_times = [t["score_s"] for t in out["trials"] if t["score_s"] is not None]
    order_times = [t["order_s"] for t in out["trials"] if t["order_s"] is not None]
    idle = f"{out['idle_cpu_percent_of_core']:.2f}% of a core"
    rss = f"{out['rss_mb']:.0f} MB (peak {out['peak_rss_mb']:.0f} MB)"
    placed = _mm(order_times)
    stop = f"{out['sigterm_seconds']:.2f} s, code {out['sigterm_exit_code']}"
    rows = [
        ("machine", out["machine"], ""),
        ("head", out["head"], ""),
        ("photo size", f"4000x3000 JPEG, {out['photo_bytes'] / 1e6:.1f} MB", ""),
        ("closed -> scored (median, max)", _mm(score_times), "< 5 s"),
        ("closed -> placed in order (median, max)", placed, "< 5 s"),
        (f"idle CPU over {out['idle_seconds']:.0f} s", idle, "< 1%"),
        ("RSS, real-shape model loaded", rss, "< 400 MB"),
        ("torch imported in the daemon", str(out["torch_in_daemon"]), "False"),
        ("SIGTERM -> exit", stop, "< 5 s, 0"),
    ]
    out["settle"], out["reorder_interval"] = args.settle, args.reorder_interval
    out["score_median_s"] = float(np.median(score_times)) if score_times else None
    out["order_median_s"] = float(np.median(order_times)) if order_times else None
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<45}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<45}  {target}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


def train_head(env: dict) -> str:
    """Train a head on the labelled half (torch, here in the bench process, never in the daemon).
    Random weights embed every photo alike, so near-duplicate grouping is switched off."""
    os.environ.update(IMGRANK_HOME=env["IMGRANK_HOME"], IMGRANK_MODEL=env["IMGRANK_MODEL"])
    from imgrank.store.db import open_db
    from imgrank.train import TrainConfig, train

    db = open_db()
    try:
        run = train(db, TrainConfig(near_dup=1.01, min_per_class=5, force=True))
    finally:
        db.close()
    return f"trained MLP (run {run.get('id', run.get('run_id', '?'))})"


def _mm(values: list[float]) -> str:
    if not values:
        return "none arrived"
    return f"{np.median(values):.2f} s, {max(values):.2f} s"


if __name__ == "__main__":
    main()
