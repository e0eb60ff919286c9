"""Benchmark: on a big folder's first scan, how long from start to the first useful order.

Makes N small photos (default 20,000 of 480×360, mtimes a minute apart) or takes --folder, builds a
random-weight model with the shape of uform3-small (ViT-S/16; no weights are downloaded), then runs
`imgrank scan --order FOLDER` in a fresh store as a user would and times, from the command's start:
  first order   the "first order: ..." line: the first 2,000 photos embedded (newest first),
                scored by the cold-start prior and their mtimes set, while the scan goes on
  embedded      photos embedded by then, and the scan's rate
With --full it lets the scan finish (the whole folder embedded and ordered) and times that too;
without, it stops the scan (SIGINT) once the first order is there. Writes bench-out/bench_first_order.json.

    nice -n 10 python scripts/bench_first_order.py                 # 20,000 photos
    nice -n 10 python scripts/bench_first_order.py -n 5000 --full
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgrank.testing.tinymodel import build_model  # noqa: E402

FIRST = re.compile(r"first order: (\d+) photos")


def make_photo(args: tuple[str, int]) -> None:
    """A 480×360 JPEG with photo-like content (smooth shapes and noise), mtime `seed` minutes in."""
    path, seed = args
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8))
    img = np.asarray(small.resize((480, 360), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=85)
    t = 1_600_000_000 + 60 * seed
    os.utime(path, (t, t))


def make_folder(folder: Path, n: int, jobs: int) -> None:
    todo = []
    for i in range(n):
        sub = folder / f"{2000 + i // 2000}"
        sub.mkdir(parents=True, exist_ok=True)
        todo.append((str(sub / f"IMG_{i:05d}.jpg"), i))
    with multiprocessing.Pool(jobs) as pool:
        pool.map(make_photo, todo, chunksize=64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20_000, help="photos to make (default 20,000)")
    ap.add_argument("--folder", type=Path, help="scan this folder instead of making one")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="decoding processes")
    ap.add_argument("--full", action="store_true", help="let the scan finish, and time it")
    ap.add_argument("--out", type=Path, default=Path("bench-out/bench_first_order.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-first-order-"))
    try:
        folder = args.folder
        if folder is None:
            folder = work / "photos"
            t = time.monotonic()
            make_folder(folder, args.n, args.jobs)
            print(f"made {args.n} photos in {time.monotonic() - t:.0f} s", file=sys.stderr)
        photos = sum(1 for _ in folder.rglob("*.jpg"))
        model = build_model(work / "model", shape="small")
        env = {**os.environ, "IMGRANK_HOME": str(work / "home"), "IMGRANK_MODEL": str(model)}
        cmd = [sys.executable, "-m", "imgrank", "scan", "--order", "--json", "--jobs", str(args.jobs)]
        cmd.append(str(folder))
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = None
        for line in proc.stderr:
            found = FIRST.search(line)
            if found:
                first = {"seconds": round(time.monotonic() - start, 1), "ordered": int(found.group(1))}
                print(f"first order after {first['seconds']} s: {first['ordered']} photos", file=sys.stderr)
                if not args.full:
                    proc.send_signal(signal.SIGINT)
                break
        out, _ = proc.communicate()
        total = round(time.monotonic() - start, 1)
        result = {
            "photos": photos,
            "jobs": args.jobs,
            "first_order": first,
            "command": " ".join(["imgrank", *cmd[3:-1], "FOLDER"]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        if args.full:
            summary = json.loads(out)
            result["full_scan"] = {
                "seconds": total,
                "embedded": summary["embedded"],
                "ordered": summary.get("ordered"),
                "images_per_second": round(summary["embedded"] / total, 1),
            }
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
