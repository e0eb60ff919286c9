"""Benchmark: peak memory of `imgrank scan`, the main process and its decoding workers together.

Makes two folders (or takes --small-folder / --photo-folder):
  small   N tiny JPEGs (64×48): what grows with the folder's length (rows, paths, the queue)
  photos  M 12-megapixel JPEGs (4000×3000, 2.8 MB): what grows with each image's size (decoding)
builds a random-weight model (--shape tiny by default; `small` has uform3-small's image encoder),
and scans each folder into a fresh store with `python -m imgrank scan --jobs J`, sampling every
20 ms the resident memory (RSS) of the scan and of all its children. Prints a table and writes
bench-out/bench_memory.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgrank.testing.tinymodel import build_model  # noqa: E402


def make_small(args: tuple[str, int]) -> None:
    path, seed = args
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=85)


def make_photo(path: str) -> bytes:
    """A 4000×3000 JPEG with photo-like content: smooth shapes plus sensor-like noise."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    img = np.asarray(small.resize((4000, 3000), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)
    return Path(path).read_bytes()


def make_photos(folder: Path, n: int) -> Path:
    """n distinct 12-megapixel JPEGs: one encoded photo, each copy with its own comment segment
    (other bytes, so another content hash and a full decode; encoding 1,000 would take an hour)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_photo(str(folder / "IMG_00000.jpg"))
    for i in range(1, n):
        text = f"imgrank bench photo {i}".encode()
        comment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
        (folder / f"IMG_{i:05d}.jpg").write_bytes(data[:2] + comment + data[2:])
    return folder


def make_folder(folder: Path, n: int, maker, jobs: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(jobs) as pool:
        pool.map(maker, [(str(folder / f"IMG_{i:05d}.jpg"), i) for i in range(n)], chunksize=16)
    return folder


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += tree(int(child))
    except OSError:
        pass
    return out


def scan_peak(folder: Path, home: Path, model: Path, jobs: int) -> dict:
    """Run one scan into a fresh home; the peaks of the main process and of the whole tree (MB)."""
    env = {**os.environ, "IMGRANK_HOME": str(home), "IMGRANK_MODEL": str(model)}
    cmd = [sys.executable, "-m", "imgrank", "-q", "scan", str(folder), "--json", "--jobs", str(jobs)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    main_peak = total_peak = 0
    while proc.poll() is None:
        pids = tree(proc.pid)
        sizes = [rss_kb(p) for p in pids]
        main_peak = max(main_peak, sizes[0])
        total_peak = max(total_peak, sum(sizes))
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"scan failed: {err.decode(errors='replace')}")
    summary = json.loads(out)
    return {
        "files": summary["new"] + summary["unreadable"],
        "embedded": summary["embedded"],
        "seconds": round(time.monotonic() - start, 1),
        "main_peak_mb": round(main_peak / 1024),
        "total_peak_mb": round(total_peak / 1024),
    }


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--small", type=int, default=10_000, help="How many tiny JPEGs.")
    parser.add_argument("--photos", type=int, default=1_000, help="How many 12-megapixel JPEGs.")
    parser.add_argument("--small-folder", help="Use this folder of small files instead.")
    parser.add_argument("--photo-folder", help="Use this folder of photos instead.")
    parser.add_argument("--shape", default="tiny", choices=["tiny", "small"], help="Random model's shape.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="bench-out/bench_memory.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imgrank-bench-memory-"))
    model = build_model(work / "model", shape=args.shape)
    folders = {
        "small": Path(args.small_folder) if args.small_folder else None,
        "photos": Path(args.photo_folder) if args.photo_folder else None,
    }
    if folders["small"] is None and args.small:
        folders["small"] = make_folder(work / "small", args.small, make_small, args.jobs)
    if folders["photos"] is None and args.photos:
        folders["photos"] = make_photos(work / "photos", args.photos)

    rows = {}
    for name, folder in folders.items():
        if folder is not None:
            rows[name] = scan_peak(folder, work / f"home-{name}", model, args.jobs)
            print(f"{name}: {rows[name]}", file=sys.stderr)

    print(f"{'folder':<8} {'files':>7} {'seconds':>8} {'main peak MB':>13} {'main+workers peak MB':>21}")
    for name, r in rows.items():
        print(f"{name:<8} {r['files']:>7} {r['seconds']:>8} {r['main_peak_mb']:>13} {r['total_peak_mb']:>21}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    out.write_text(json.dumps({"shape": args.shape, "jobs": args.jobs, "machine": machine, **rows}, indent=2))


if __name__ == "__main__":
    main()
