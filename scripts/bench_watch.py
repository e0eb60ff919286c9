"""Benchmark: the daemon with the real-shape model (uform3 small layout, random weights).

1. builds the model (`imgrank.testing.tinymodel.build_model(dir, shape="small")`), scans a folder of
   camera-sized JPEGs, labels half of them and trains a head (`imgrank train`, torch, in its own process);
2. starts `python -m imgrank watch ROOT` (default --settle 2) as a subprocess;
3. latency: copies a photo into the root (closed when the copy returns) and times until its score
   is in the database and until `order` has given it its place (its mtime is the one recorded in
   `mtimes`). Trials are spaced by the reorder interval (default: the daemon's own, 30 s), so
   each photo arrives as one would on a quiet day, and is placed by the daemon's default rules;
4. idle CPU over 60 s: the daemon's CPU time (its process CPU clock, in ns, which counts threads
   that ended too; /proc/PID/stat's utime + stime, in 1/100 s, beside it), which thread used it,
   its page faults, the load average, and whether its counters moved (an idle window in which it
   reordered or indexed was not idle); resident memory from /proc/PID/status;
5. stops it with SIGTERM and times the exit.

    python scripts/bench_watch.py [--photos 40] [--trials 5] [--idle 60] [--reorder-interval 30]
    python scripts/bench_watch.py --shape tiny --photos 12 --trials 0 --idle 120   # idle CPU alone, quick

Prints a table and writes bench-out/bench_watch.json.
"""

from __future__ import annotations

import argparse
import ctypes
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


def proc_stat(pid: int | str) -> dict:
    """Page faults and CPU ticks (1/100 s) of a process, or of one thread (pid/task/tid)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    minflt, majflt, utime, stime = (int(fields[i]) for i in (7, 9, 11, 12))  # fields 10, 12, 14, 15
    return {"minflt": minflt, "majflt": majflt, "utime": utime, "stime": stime}


def cpu_ns(pid: int) -> int:
    """The process's CPU time in ns (all its threads, those that ended included)."""
    clock = ctypes.c_int()
    if ctypes.CDLL(None).clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError(f"no CPU clock for pid {pid}")
    return time.clock_gettime_ns(clock.value)


def thread_ticks(pid: int) -> dict[str, int]:
    """utime + stime of each live thread, by 'tid name' (the main thread's tid is the pid)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        st = proc_stat(f"{pid}/task/{task.name}")
        out[f"{task.name} {text[text.index('(') + 1 : text.rindex(')')]}"] = st["utime"] + st["stime"]
    return out


def measure_idle(pid: int, seconds: float, db: Path) -> dict:
    """The daemon's CPU over `seconds` in which nothing is asked of it."""
    counters0 = daemon_counters(db, after=time.time())  # the window opens right after a heartbeat
    threads0 = thread_ticks(pid)
    stat0, ns0, t0, load0 = proc_stat(pid), cpu_ns(pid), time.monotonic(), os.getloadavg()
    time.sleep(seconds)
    stat1, ns1, t1, load1 = proc_stat(pid), cpu_ns(pid), time.monotonic(), os.getloadavg()
    threads1, counters1 = thread_ticks(pid), daemon_counters(db, after=time.time())
    hz, wall = os.sysconf("SC_CLK_TCK"), t1 - t0
    moved = {
        k: [counters0.get(k), counters1.get(k)]
        for k in ("events", "indexed", "scored", "reorders", "retrains", "errors")
        if counters0.get(k) != counters1.get(k)
    }
    return {
        "idle_seconds": round(wall, 1),
        "idle_cpu_percent_of_core": round(100 * (ns1 - ns0) / 1e9 / wall, 3),
        "idle_cpu_ms": round((ns1 - ns0) / 1e6, 1),
        "idle_ticks_percent_of_core": round(
            100 * (stat1["utime"] + stat1["stime"] - stat0["utime"] - stat0["stime"]) / hz / wall, 3
        ),
        "idle_delta": {k: stat1[k] - stat0[k] for k in stat0},  # faults, and ticks split user/system
        "idle_threads_ticks": {
            k: n - threads0.get(k, 0) for k, n in threads1.items() if n - threads0.get(k, 0)
        },
        "idle_load": [round(x, 2) for x in (*load0, *load1)],  # 1, 5, 15 min: at the start, at the end
        "idle_counters_moved": moved,  # by the heartbeats just before and after: empty when idle
    }


def daemon_counters(db: Path, after: float) -> dict:
    """The counters of the daemon's first heartbeat (one every 10 s) after the time `after`."""
    rows = wait_for(lambda: query(db, "SELECT counters FROM daemon WHERE heartbeat_at > ?", [after]), 30)
    return json.loads(rows[0][0]) if rows and rows[0][0] else {}


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
    parser.add_argument("--shape", default="small", help="the random model's layout: small (real) or tiny")
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

        env["IMGRANK_MODEL"] = str(build_model(work / "model", shape=args.shape))
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
            for src in sorted(staged.glob("*.jpg")):  # none with --trials 0
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
            out.update(measure_idle(pid, args.idle, db))
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
    idle = f"{out['idle_cpu_percent_of_core']:.3f}% of a core ({out['idle_cpu_ms']:.0f} ms)"
    load = "load {:.2f} {:.2f} {:.2f} -> {:.2f} {:.2f} {:.2f}".format(*out["idle_load"])
    moved = ", ".join(f"{k} {a}->{b}" for k, (a, b) in out["idle_counters_moved"].items()) or "none"
    by_thread = ", ".join(f"{k}: {v}" for k, v in out["idle_threads_ticks"].items()) or "none"
    by_thread += f"; {out['idle_delta']['minflt']}, {out['idle_delta']['majflt']}"
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
        ("  load average over it", load, ""),
        ("  counters that moved over it", moved, "none"),
        ("  ticks by thread; faults (minor, major)", by_thread, ""),
        (f"RSS, {args.shape} model loaded", rss, "< 400 MB"),
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
