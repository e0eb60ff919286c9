"""Camera RAW files: what a RAW is, and the picture inside one (LibRaw through rawpy, the `raw` extra).

A RAW is read from its embedded JPEG preview, which every camera writes for its own screen: the
preview's bytes go on to Pillow as a JPEG (files.decode_image), with all of its checks. A RAW whose
preview is missing or too small to judge is demosaiced at half size, after the same kind of checks
on what its header declares. Nothing here writes a file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass

from imgrank.errors import UnreadableImage

# The RAW formats imgrank reads: the one list (the walk, decoding and RAW+JPEG pairs use it).
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"})


@functools.cache
def load_rawpy():
    """rawpy (the `raw` extra), or None where it cannot be imported; imported on first use, not with
    this module: it loads numpy, which `imgrank --help` and `status` never need (files imports this)."""
    try:
        import rawpy
    except ImportError:  # pragma: no cover - depends on the extra
        return None
    return rawpy


RAW_HINT = "RAW photos are skipped: install the raw extra (pip install 'imgrank[raw]') to read them"

# A preview whose short side is below this is a placeholder (some cameras write an 8×8 one), not a
# picture of the shot: the RAW data is demosaiced instead.
MIN_PREVIEW_SIDE = 100
# Camera RAW data takes at least ~0.5 byte a pixel (lossy compressed CR3/NEF/ARW; lossless ~1.5).
# A header that declares more than this many pixels a byte is a forgery or a truncated file.
MAX_RAW_PIXELS_PER_BYTE = 8
# LibRaw's orientation codes (sizes.flip) as PIL transpose operations: 3 = 180°, 5 = 90° counter-
# clockwise, 6 = 90° clockwise.
_FLIP_ROTATION = {3: 180, 5: 90, 6: 270}


def is_raw_name(name: str) -> bool:
    return name[name.rfind(".") :].lower() in RAW_EXTENSIONS


@dataclass
class Picture:
    """What a RAW holds to look at: the preview's JPEG bytes, or a half-size demosaic (H×W×3 uint8),
    with the rotation to apply (degrees counter-clockwise) and the RAW's own size (oriented)."""

    jpeg: bytes | None
    rgb: object | None  # numpy.ndarray
    rotate: int
    size: tuple[int, int]


def picture(data: bytes, max_bytes: int) -> Picture:
    """The picture inside RAW bytes: the embedded preview, else a half-size demosaic costing at most
    `max_bytes`. Raises UnreadableImage with a one-line reason."""
    rawpy = load_rawpy()
    if rawpy is None:
        raise UnreadableImage(RAW_HINT)
    try:
        with _quiet_stderr(), rawpy.imread(io.BytesIO(data)) as raw:
            s = raw.sizes
            rotate = _FLIP_ROTATION.get(s.flip, 0)
            size = (s.height, s.width) if rotate in (90, 270) else (s.width, s.height)
            jpeg, bitmap = _preview(raw)
            if jpeg is not None:
                return Picture(jpeg, None, rotate, size)
            if bitmap is not None and min(bitmap.shape[:2]) >= MIN_PREVIEW_SIDE:
                return Picture(None, bitmap, 0, size)  # LibRaw's bitmaps are already oriented
            bayer = raw.raw_type == rawpy.RawType.Flat  # a linear DNG is not halved
            _check_cost(s.raw_width, s.raw_height, len(data), max_bytes, bayer)
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            return Picture(None, rgb, 0, size)
    except UnreadableImage:
        raise
    except (MemoryError, rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError):
        # the worker's memory limit (see imgrank.workers) stopped LibRaw
        raise UnreadableImage("out of memory while decoding") from None
    except rawpy.LibRawFileUnsupportedError:
        raise UnreadableImage("not a RAW file LibRaw can read (unsupported camera, or damaged)") from None
    except rawpy.LibRawTooBigError:
        raise UnreadableImage("decompression bomb: LibRaw refuses the image as too big") from None
    except (rawpy.LibRawError, OSError, ValueError) as e:
        raise UnreadableImage(f"corrupt or truncated RAW: {_message(e)}") from None


def _preview(raw) -> tuple[bytes | None, object | None]:
    """The embedded preview: (JPEG bytes, None) when it is a JPEG big enough to judge, (None, bitmap)
    for a bitmap one, (None, None) when there is none or it is a placeholder."""
    rawpy = load_rawpy()
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None, None
    except rawpy.LibRawError:  # a damaged preview: the RAW data may still be whole
        return None, None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        return None, thumb.data
    if _jpeg_short_side(thumb.data) >= MIN_PREVIEW_SIDE:
        return bytes(thumb.data), None
    return None, None


def _jpeg_short_side(data: bytes) -> int:
    """The short side a JPEG's header declares (0 if it is not a readable JPEG), without decoding it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
            return min(img.size)
    except Exception:  # any failure to read a header means: no usable preview
        return 0


def demosaic_cost(raw_width: int, raw_height: int, bayer: bool = True) -> int:
    """Bytes a half-size demosaic allocates: the raw data (16-bit, 3 channels for a linear RAW),
    LibRaw's 4×16-bit image (half size only for a Bayer sensor), the 8-bit RGB output and its copy
    into Pillow."""
    pixels = raw_width * raw_height
    out = pixels // 4 if bayer else pixels
    return (2 if bayer else 6) * pixels + 8 * out + 2 * 3 * out


def _check_cost(raw_width: int, raw_height: int, size: int, max_bytes: int, bayer: bool = True) -> None:
    if raw_width * raw_height > MAX_RAW_PIXELS_PER_BYTE * size:
        raise UnreadableImage(
            f"decompression bomb: RAW declares {raw_width}×{raw_height} pixels in {size} bytes "
            "(a forged or truncated file)"
        )
    cost = demosaic_cost(raw_width, raw_height, bayer)
    if cost > max_bytes:
        raise UnreadableImage(
            f"decompression bomb: RAW declares {raw_width}×{raw_height} pixels, "
            f"{cost / 2**20:,.0f} MB to decode (limit {max_bytes / 2**20:,.0f} MB)"
        )


def _message(e: Exception) -> str:
    text = e.args[0] if e.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextlib.contextmanager
def _quiet_stderr():
    """LibRaw prints its complaints about damaged data on stderr ('data corrupted at 1378'); the
    reason imgrank records says it in one line, so the decoding process's stderr is muted meanwhile."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
