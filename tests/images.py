"""Real image files for tests: every format imgrank reads, and every kind of bad file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, features


def photo(path: Path, seed: int = 0, size=(320, 240), fmt: str | None = None) -> Path:
    """A small noisy 'photo' whose content differs with the seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    arr = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)
    return path


def every_format(folder: Path) -> dict[str, Path]:
    """One good file per supported format (HEIC/AVIF where this Pillow can write them)."""
    out = {}
    for i, ext in enumerate(["jpg", "png", "webp", "bmp", "tiff"]):
        out[ext] = photo(folder / f"good.{ext}", seed=i)
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "blue")]
    frames[0].save(folder / "good.gif", save_all=True, append_images=frames[1:])
    out["gif"] = folder / "good.gif"
    if features.check("avif"):
        out["avif"] = photo(folder / "good.avif", seed=11)
    try:
        import pillow_heif  # noqa: F401

        out["heic"] = photo(folder / "good.heic", seed=12, fmt="HEIF")
    except Exception:
        pass
    return out


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header declares an enormous image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    """Zero bytes, truncated, not an image, a decompression bomb."""
    folder.mkdir(parents=True, exist_ok=True)
    good = photo(folder / "source.jpg", seed=99).read_bytes()
    (folder / "source.jpg").unlink()
    out = {
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.jpg",
        "not_image": folder / "notes.png",
        "bomb": bomb_png(folder / "bomb.png"),
    }
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(good[: len(good) // 2])
    out["not_image"].write_text("this is a shopping list, not a picture\n")
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file's bytes and mtime_ns under root."""
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def strip_png(path: Path, width: int = 1, height: int = 20_000) -> Path:
    """A real, valid, tiny PNG of an extreme shape (1×20,000 is ~170 bytes): cheap to decode, but
    scaled to the model's 224-pixel short side it would be 224×4.5 million pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), "white").save(path, optimize=True)
    return path


def forged_jpeg(path: Path, width: int = 60_000, height: int = 60_000) -> Path:
    """A 64×64 JPEG whose frame header (SOF) declares width×height pixels."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path
