"""Benchmark: `imgrank scan` throughput against the decode+model ceiling, in one run.

Makes N 12-megapixel JPEGs (or takes --folder), builds a random-weight model with the shape of
uform3-small's image encoder (ViT-S/16, width 384, 12 layers, 6 heads, 224 px, 256-d), then
measures on all cores:
  decode   read + hash + decode + preprocess, in the scan's own worker pool (images/s)
  model    image-encoder inference on pre-made 224 px crops, in the scan's batches (images/s)
           (both before and after the scan; the mean of the two is used)
  ceiling  without --device (ONNX) or with --device cpu: 1 / (1/decode + 1/model), as both
           share the same cores; with --device cuda: min(decode, model), as the GPU runs the
           model while the cores decode
  scan     a full `imgrank scan` of the folder into a fresh store (images/s)
and prints scan / ceiling. Writes bench-out/bench_embed.json (--out).

    python scripts/bench_embed.py                        # ONNX on the CPU, 160 photos
    python scripts/bench_embed.py --device cuda          # torch fp16 on the GPU, 1000 photos
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgrank import index, workers  # noqa: E402
from imgrank.embed import load_embedder  # noqa: E402
from imgrank.files import walk  # noqa: E402
from imgrank.store.db import open_db  # noqa: E402
from imgrank.testing.tinymodel import build_model  # noqa: E402


def make_photo(args: tuple[str, int]) -> None:
    """A 4000×3000 JPEG with photo-like content: smooth shapes plus sensor-like noise."""
    path, seed = args
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    img = np.asarray(small.resize((4000, 3000), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)


def _time_calls(obj, names: tuple[str, ...]) -> list[float]:
    """Wrap these methods of `obj` to add their time to the returned one-item list."""
    spent = [0.0]
    for name in names:
        method = getattr(obj, name)

        def timed(*a, _method=method, **k):
            t = time.perf_counter()
            try:
                return _method(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t

        setattr(obj, name, timed)
    return spent


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("-n", type=int, help="How many 12-megapixel JPEGs to make (160; 1000 on CUDA).")
    parser.add_argument("--folder", help="Benchmark on this folder of photos instead.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--device", help="torch device for the image encoder (cuda, cpu); default ONNX.")
    parser.add_argument("--out", default="bench-out/bench_embed.json")
    args = parser.parse_args()
    gpu = bool(args.device) and args.device.startswith("cuda")
    args.n = args.n or (1000 if gpu else 160)

    work = Path(tempfile.mkdtemp(prefix="imgrank-bench-"))
    # Every measure writes its own thumbnails (the scan's workers make them), none into the user's home.
    os.environ["IMGRANK_HOME"] = str(work / "home")
    thumbs = work / "home" / "thumbs"
    if args.folder:
        folder = Path(args.folder)
    else:
        folder = work / "photos"
        folder.mkdir()
        with multiprocessing.Pool(args.jobs) as pool:
            pool.map(make_photo, [(str(folder / f"IMG_{i:04d}.jpg"), i) for i in range(args.n)])
    paths = [str(p) for p in walk(folder)]
    n = len(paths)
    mb = sum(os.path.getsize(p) for p in paths) / n / 1e6
    print(f"{n} photos, {mb:.1f} MB each on average", file=sys.stderr)

    model_dir = build_model(work / "model", shape="small")
    embedder = load_embedder(str(model_dir), device=args.device)
    batch = embedder.scan_batch or index.BATCH

    def decode_rate() -> tuple[float, np.ndarray]:
        """Read + hash + decode + preprocess on all cores: the scan's own workers, nothing known yet."""
        shutil.rmtree(thumbs, ignore_errors=True)
        t = time.perf_counter()
        decoded = list(workers.read_all(paths, set(), args.jobs))
        rate = n / (time.perf_counter() - t)
        crops = np.stack([d["array"] for d in decoded if d["array"] is not None])
        return rate, np.resize(crops, (batch, *crops.shape[1:]))  # one scan batch, repeated if need be

    def model_rate(tensors: np.ndarray) -> float:
        """The image encoder alone on pre-made crops, in the scan's batches (a GPU's result is waited for)."""
        embedder.embed_images(tensors)
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < 10:
            embedder.embed_images(tensors)
            reps += 1
        return reps * len(tensors) / (time.perf_counter() - t)

    # This machine's speed drifts by tens of percent over minutes: decode and model are measured
    # before and after the scan, and the ceiling uses their means. Each pool's start-up is counted,
    # as in a scan; the forkserver they fork from is started here first.
    list(workers.read_all(paths[: 2 * args.jobs], set(), args.jobs))
    decode_before, tensors = decode_rate()
    model_before = model_rate(tensors)

    # The full scan into a fresh store.
    shutil.rmtree(thumbs, ignore_errors=True)
    db = open_db()
    index.add_roots(db, [folder])
    in_models = _time_calls(embedder, ("embed_images", "embed_texts"))
    result = index.scan(db, [folder], embedder, jobs=args.jobs)
    assert result.embedded == n, result
    scan_rate = n / result.seconds
    spent_in_encoders = in_models[0]
    print(
        f"scan {result.seconds:.2f} s, of which the main process spent {spent_in_encoders:.2f} s in the "
        f"encoders (images and file names)",
        file=sys.stderr,
    )

    decode_after, _ = decode_rate()
    model_after = model_rate(tensors)
    decode = (decode_before + decode_after) / 2
    model = (model_before + model_after) / 2
    ceiling = min(decode, model) if gpu else 1 / (1 / decode + 1 / model)
    print(
        f"decode before/after the scan {decode_before:.1f}/{decode_after:.1f} images/s, "
        f"model {model_before:.2f}/{model_after:.2f} images/s",
        file=sys.stderr,
    )

    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "encoder": _encoder_name(args.device),
        "gpu": _gpu_name() if gpu else None,
        "jobs": args.jobs,
        "batch": batch,
        "photos": n,
        "mb_per_photo": round(mb, 2),
        "decode_per_s": round(decode, 2),
        "model_per_s": round(model, 2),
        "ceiling_per_s": round(ceiling, 2),
        "scan_per_s": round(scan_rate, 2),
        "scan_over_ceiling": round(scan_rate / ceiling, 3),
        "scan_seconds": round(result.seconds, 3),
        "scan_seconds_in_encoders": round(spent_in_encoders, 3),
    }
    print(f"{'measure':<22}{'images/s':>10}")
    for key in ("decode_per_s", "model_per_s", "ceiling_per_s", "scan_per_s"):
        print(f"{key.removesuffix('_per_s'):<22}{figures[key]:>10.2f}")
    print(f"{'scan / ceiling':<22}{figures['scan_over_ceiling']:>10.3f}")
    print(f"({figures['encoder']}{', ' + figures['gpu'] if gpu else ''}; {figures['machine']})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))


def _encoder_name(device: str | None) -> str:
    if not device:
        return "ONNX on the CPU"
    return f"torch on {device}" + (" (fp16)" if device.startswith("cuda") else "")


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(torch.cuda.current_device()))


if __name__ == "__main__":
    main()
