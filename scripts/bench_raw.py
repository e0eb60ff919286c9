"""Benchmark: decode rate of camera RAW files against JPEG, through imgrank's own decode path.

Times files.decode_image (what a decoding worker does with a file's bytes before preprocessing) on:
  - each real RAW file in tests/data/raw (see its README): CR2, CR3, DNG, RAF, NEF, RW2, either
    decoded (the RAF's embedded preview) or refused with a reason (stripped files, RAW bombs);
  - LibRaw's half-size demosaic of the RW2 and the DNGs, with the RAW-bomb check lifted (their
    sensor data was stripped, so LibRaw demosaics what is left: the time is that of the real work
    on a full-size sensor, 10-12 megapixels);
  - a 12-megapixel JPEG (4000×3000, photo-like) and a 160×120 JPEG (a preview's size).
Each case runs for at least --seconds (after one warm-up call) on one core. Prints a table and
writes bench-out/bench_raw.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgrank import raw  # noqa: E402
from imgrank.errors import UnreadableImage  # noqa: E402
from imgrank.files import decode_image  # noqa: E402

RAW_DATA = ROOT / "tests" / "data" / "raw"


def photo_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG with photo-like content: smooth gradients plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 400 + c) * np.cos(y / 300 - c) for c in (0, 1, 2)], axis=-1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rate(data: bytes, name: str, seconds: float) -> dict:
    """Decodes a second of `data` as `name`, and what came of it."""

    def once():
        try:
            img = decode_image(data, name)
            return f"decoded {img.size[0]}×{img.size[1]}"
        except UnreadableImage as e:
            return f"reason: {e}"

    outcome = once()  # warm-up (and the outcome)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        once()
        n += 1
    return {"per_second": n / elapsed, "ms": 1000 * elapsed / n, "outcome": outcome, "bytes": len(data)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per case")
    args = ap.parse_args()
    if raw.load_rawpy() is None:
        sys.exit(raw.RAW_HINT)

    cases = []
    for f in sorted(RAW_DATA.iterdir()):
        if raw.is_raw_name(f.name):
            cases.append((f"{f.suffix[1:].upper()} {f.name}", f.read_bytes(), f.name, False))
    for name in ("Panasonic.rw2", "DNG.dng", "IMG_1361.dng"):
        cases.append((f"demosaic {name}", (RAW_DATA / name).read_bytes(), name, True))
    cases.append(("JPEG 4000×3000", photo_jpeg(4000, 3000), "photo.jpg", False))
    cases.append(("JPEG 160×120", photo_jpeg(160, 120), "preview.jpg", False))

    results = {}
    print(f"{'case':<28} {'KB':>6} {'files/s':>9} {'ms':>8}  outcome")
    for label, data, name, lift in cases:
        saved = raw.MAX_RAW_PIXELS_PER_BYTE
        if lift:  # stripped sensor data: let LibRaw demosaic what is there
            raw.MAX_RAW_PIXELS_PER_BYTE = 10**9
        try:
            r = rate(data, name, args.seconds)
        finally:
            raw.MAX_RAW_PIXELS_PER_BYTE = saved
        results[label] = r
        kb, outcome = r["bytes"] / 1024, r["outcome"][:70]
        print(f"{label:<28} {kb:>6.0f} {r['per_second']:>9.1f} {r['ms']:>8.2f}  {outcome}")

    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "libraw": ".".join(map(str, raw.load_rawpy().libraw_version)),
        "rawpy": raw.load_rawpy().__version__,
    }
    (out / "bench_raw.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\n{meta['machine']}; LibRaw {meta['libraw']} (rawpy {meta['rawpy']})")
    print(f"wrote {out / 'bench_raw.json'}")


if __name__ == "__main__":
    main()
