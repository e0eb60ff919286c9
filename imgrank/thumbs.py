"""Thumbnails for the review page, cached under the imgrank home (never next to the photos).

The scan makes them from the same decode as the embedding (`save_from_decode`, called in the
decoding worker); a photo embedded before that gets its thumbnail when first asked for. The scan
makes none for a photo that is small itself (a thumbnail would cost about what the photo does), and
stops making them once the cache holds THUMBS_CAP bytes (`imgrank status` shows both figures); the
review page still makes any it shows.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from imgrank import config
from imgrank.errors import StoreError
from imgrank.files import open_image
from imgrank.private import private_dir, private_output

THUMB_SIDE = 320
LARGE_SIDE = 1600
SMALL_PHOTO = 48 << 10  # a photo under this many bytes gets no thumbnail from the scan
THUMBS_CAP = int(os.environ.get("IMGRANK_THUMBS_MB", "500")) * 10**6  # the scan's cache total

_cached: int | None = None  # bytes in the cache, as this process last counted them


def cache_size() -> tuple[int, int]:
    """(thumbnails, bytes) in the cache."""
    count = size = 0
    for folder, _, names in os.walk(config.home_dir() / "thumbs"):
        for name in names:
            try:
                size += os.stat(os.path.join(folder, name)).st_size
                count += 1
            except OSError:
                pass
    return count, size


def thumb_path(sha256: str) -> Path:
    return config.home_dir() / "thumbs" / sha256[:2] / f"{sha256}.jpg"


def _write(img: Image.Image, path: Path, side: int) -> None:
    small = img.copy()
    small.thumbnail((side, side), Image.BICUBIC)
    private_dir(path.parent, config.home_dir())
    with private_output(path) as f:  # 0600, renamed into place: readers never see half a file
        small.convert("RGB").save(f, "JPEG", quality=82)


def save_from_decode(img: Image.Image, sha256: str, photo_bytes: int) -> None:
    """Cache the thumbnail of a photo just decoded for its embedding (cheap: the decode is done),
    unless the photo is small itself or the cache is full (see the module text)."""
    global _cached
    path = thumb_path(sha256)
    if photo_bytes < SMALL_PHOTO or path.exists():
        return
    if _cached is None:
        _cached = cache_size()[1]  # once per decoding process, then kept up to date
    if _cached >= THUMBS_CAP:
        return
    try:
        _write(img, path, THUMB_SIDE)
        _cached += path.stat().st_size
    except (OSError, StoreError):
        pass  # a full or read-only home (or a link for thumbs/) costs a lazy thumbnail, not the scan


def thumbnail(sha256: str, photo_path: str) -> Path:
    """The cached thumbnail, made now from the photo if the scan did not make it."""

    path = thumb_path(sha256)
    if not path.exists():
        _write(open_image(photo_path, target=THUMB_SIDE), path, THUMB_SIDE)
    return path


def large_jpeg(photo_path: str) -> bytes:
    """The photo at up to LARGE_SIDE pixels as JPEG bytes (any format imgrank reads; made on request)."""

    img = open_image(photo_path, target=LARGE_SIDE)
    img.thumbnail((LARGE_SIDE, LARGE_SIDE), Image.BICUBIC)
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=88)
    return out.getvalue()
