"""Discovery, file identity and safe image opening. Nothing here ever writes to a photo."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, features

from imgrank.errors import UnreadableImage

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
    ".heic", ".heif", ".avif",
}  # fmt: skip
HEIF_EXTENSIONS = {".heic", ".heif"}
# Most pixels imgrank will decode. A 12-megapixel photo is far below; a small file declaring a
# gigapixel image (a decompression bomb) is refused before any pixel is decoded. JPEGs are decoded
# in draft mode (scaled by up to 1/8 while decoding), so the limit applies to the drafted size.
MAX_DECODE_PIXELS = 64_000_000
# Pillow's own bomb check is replaced by the one above, which knows about draft mode.
Image.MAX_IMAGE_PIXELS = None

try:  # HEIC/HEIF when the `heif` extra is installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the extra
    HEIF_SUPPORTED = False

AVIF_SUPPORTED = bool(features.check("avif")) if "avif" in features.get_supported_modules() else False
HEIF_HINT = "HEIC/HEIF photos are skipped: install the heif extra (pip install 'imgrank[heif]') to read them"


# --- paths ----------------------------------------------------------------------------------
# Linux file names are bytes. Above the store, paths are ordinary `str` from os.fsdecode, where a
# byte that is not UTF-8 is a lone surrogate (\udc80-\udcff) that SQLite cannot hold. db_path and
# fs_path convert at the boundary of every table with a path column: character by character,
# injective and reversible, and a plain name without a backslash is stored as it is.


def db_path(p: str | os.PathLike) -> str:
    """The text form of a path for SQLite: `\\` for a backslash, `\\xXX` for an undecodable byte."""
    s = os.fsdecode(p)
    if "\\" not in s and s.isascii():
        return s
    out = []
    for c in s:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # os.fsdecode's form of a byte that is not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # any other lone surrogate (not from a file name, but reversible)
            out.append(f"\\u{o:04x}")
        else:
            out.append(c)
    return "".join(out)


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def fs_path(s: str) -> str:
    """The path (as os.fsdecode gives it) that db_path turned into `s`."""
    if "\\" not in s:
        return s

    def back(m: re.Match) -> str:
        code = m.group(1)
        if code == "\\":
            return "\\"
        if code[0] == "x":
            return chr(0xDC00 + int(code[1:], 16))
        return chr(int(code[1:], 16))

    return _ESCAPE.sub(back, s)


def display_name(p: str | os.PathLike) -> str:
    """A lossy, always-encodable form of a path for messages and the name tokenizer (� per bad byte)."""
    try:
        raw = os.fsencode(p)
    except UnicodeEncodeError:  # a surrogate no file name holds: replace it too
        raw = os.fsdecode(p).encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def under(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Is `path` the folder itself or inside it? By name, component-wise (`/a/bc` is not under `/a/b`)."""
    p, f = os.fsdecode(path), os.fsdecode(folder)
    if p == f:
        return True
    f = f.rstrip(os.sep) + os.sep
    return p.startswith(f)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def walk(root: Path | str) -> Iterator[Path]:
    """Image files under `root`, sorted. Hidden files and folders are skipped; symlinks below the
    root are never followed (so nothing outside it is read and no link loop can hang the walk);
    FIFOs, sockets and device files are never yielded."""
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # an unreadable folder is skipped; its files cannot be listed anyway
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and is_image_name(entry.name):
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subfolders))


def read_file(path: Path | str) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file, never blocking on a FIFO or device. Raises UnreadableImage."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    noatime = getattr(os, "O_NOATIME", 0)  # reading leaves the access time alone (own files only)
    try:
        try:
            fd = os.open(path, flags | noatime)
        except PermissionError:
            if not noatime:
                raise
            fd = os.open(path, flags)
    except FileNotFoundError:
        raise UnreadableImage("vanished before it could be read") from None
    except PermissionError:
        raise UnreadableImage("permission denied") from None
    except OSError as e:
        raise UnreadableImage(f"cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableImage("not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError as e:
        raise UnreadableImage(f"read error: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file's bytes (the content identity of vectors and labels)."""
    data, _ = read_file(path)
    return sha256_bytes(data)


def decode_image(data: bytes, name: str = "", target: int = 224) -> Image.Image:
    """Decode image bytes safely: draft-mode JPEG, bomb check, first frame, EXIF orientation, RGB.

    The original (oriented) size is kept in `img.info["original_size"]`. Raises UnreadableImage.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    if os.path.splitext(name)[1].lower() in HEIF_EXTENSIONS and not HEIF_SUPPORTED:
        raise UnreadableImage(HEIF_HINT)
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if img.format == "JPEG":
            # Let libjpeg scale by up to 1/8 while decoding, keeping the short side >= target.
            img.draft("RGB", (target, target))
        if img.size[0] * img.size[1] > MAX_DECODE_PIXELS:
            raise UnreadableImage(f"decompression bomb: declares {width}×{height} pixels")
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        img = ImageOps.exif_transpose(img)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        img = _to_rgb(img)
    except UnreadableImage:
        raise
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnreadableImage(f"corrupt or truncated image: {message}") from None
    img.info["original_size"] = (width, height)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "P") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = img.point(lambda v: v / 256).convert("L")  # 16-bit greyscale to 8 bits
    return img.convert("RGB")


def open_image(path: Path | str, target: int = 224) -> Image.Image:
    """Open an image file safely (see decode_image). Raises UnreadableImage with a one-line reason."""
    data, _ = read_file(path)
    return decode_image(data, str(path), target)
