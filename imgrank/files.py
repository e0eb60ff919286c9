"""Discovery, file identity and safe image opening. Nothing here ever writes to a photo."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image, ImageOps

from imgrank import raw
from imgrank.errors import UnreadableImage
from imgrank.raw import RAW_EXTENSIONS, RAW_HINT, picture
from imgrank.words import printable

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
    ".heic", ".heif", ".avif",
}  # fmt: skip
HEIF_EXTENSIONS = {".heic", ".heif"}
# The only decoders imgrank lets Pillow use, by Pillow's format names (`formats=` of Image.open). A
# file in any other format, whatever its name, is "not an image": never EPS/PS/PDF, which Pillow
# hands to Ghostscript (a PostScript `.jpg` ran `gs` during a scan). "JPEG" covers MPO too (a JPEG
# with a second picture, as many cameras write); AVIF is Pillow's own plugin, HEIF pillow-heif's.
# RAW previews join here. A name this Pillow lacks is left out when it is asked (image_formats).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
# Most bytes decoding and preprocessing one image may allocate, estimated from its header before a
# pixel is decoded: the decoded bands, the RGB copy, and the intermediate of the resize to the model's
# input (shortest side to 224, so a 1×65,535 strip would become 224×14.7 million). A 12-megapixel
# JPEG costs ~1 MB (decoded in draft mode, scaled by up to 1/8), a 100-megapixel TIFF ~600 MB.
MAX_DECODE_BYTES = 1 << 30
# A JPEG holds at least a few bits per 8×8 block: a flat grey 8000×8000 one is ~85 pixels a byte.
# A header that declares far more pixels than its bytes can hold is a forgery (or truncated).
MAX_JPEG_PIXELS_PER_BYTE = 4096
# Pillow's own bomb check is replaced by the estimate above, which knows about draft mode.
Image.MAX_IMAGE_PIXELS = None

try:  # HEIC/HEIF when the `heif` extra is installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the extra
    HEIF_SUPPORTED = False

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


def shown_path(p: str | os.PathLike) -> str:
    """A path as imgrank prints it (top, dupes, suspects, status, messages): display_name, then
    printable. Files named to attack a terminal show their escape sequences as text."""
    return printable(display_name(p))


def db_prefix(folder: str | os.PathLike) -> str:
    """What the stored form (db_path) of every path inside `folder` starts with: SQL selects them
    exactly with `substr(path, 1, length(prefix)) = prefix` (LIKE would ignore ASCII case)."""
    return db_path(folder).rstrip(os.sep) + os.sep


def under(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Is `path` the folder itself or inside it? By name, component-wise (`/a/bc` is not under `/a/b`)."""
    p, f = os.fsdecode(path), os.fsdecode(folder)
    if p == f:
        return True
    f = f.rstrip(os.sep) + os.sep
    return p.startswith(f)


def is_image_name(name: str) -> bool:
    ext = os.path.splitext(name)[1].lower()
    return (ext in IMAGE_EXTENSIONS or ext in RAW_EXTENSIONS) and not name.startswith(".")


def walk(root: Path | str, on_error: Callable[[str, str], None] | None = None) -> Iterator[Path]:
    """Image files under `root`, sorted. Hidden files and folders are skipped; symlinks below the
    root are never followed (so nothing outside it is read and no link loop can hang the walk);
    FIFOs, sockets and device files are never yielded. A folder that cannot be listed (no read or
    exec permission, an I/O error) is passed to `on_error(folder, reason)` and the walk goes on."""
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if on_error is not None:
                on_error(str(folder), e.strerror or str(e))
            continue
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


def decode_image(data: bytes, name: str = "", target: int = 224) -> Image.Image:
    """Decode image bytes safely: draft-mode JPEG, bomb check, first frame, EXIF orientation, RGB.

    The original (oriented) size is kept in `img.info["original_size"]`. Raises UnreadableImage.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    if os.path.splitext(name)[1].lower() in HEIF_EXTENSIONS and not HEIF_SUPPORTED:
        raise UnreadableImage(HEIF_HINT)
    if os.path.splitext(name)[1].lower() in RAW_EXTENSIONS:
        return _decode_raw(data, target)
    try:
        img = Image.open(io.BytesIO(data), formats=image_formats())
        width, height = img.size
        if img.format == "JPEG":
            # Let libjpeg scale by up to 1/8 while decoding, keeping the short side >= target.
            img.draft("RGB", (target, target))
        _check_cost(img, width, height, len(data), target)
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        img = ImageOps.exif_transpose(img)
        img.info["exif_orientation"] = orientation
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        img = _to_rgb(img)
    except UnreadableImage:
        raise
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image (unrecognised format)") from None
    except MemoryError:  # the worker's memory limit (see imgrank.workers) stopped a decode
        raise UnreadableImage("out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnreadableImage(f"corrupt or truncated image: {message}") from None
    img.info["original_size"] = (width, height)
    return img


def image_formats() -> list[str]:
    """IMAGE_FORMATS that this Pillow has a decoder for (Image.open fails on an unknown name)."""
    Image.init()
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def _decode_raw(data: bytes, target: int) -> Image.Image:
    """A camera RAW (imgrank.raw): its preview decoded as the JPEG it is, or its half-size demosaic;
    turned as the camera was held, with the RAW's own size as the original size."""
    pic = picture(data, MAX_DECODE_BYTES)
    if pic.jpeg is not None:
        img = decode_image(pic.jpeg, "preview.jpg", target)
        if pic.rotate and img.info.get("exif_orientation", 1) == 1:
            img = img.rotate(pic.rotate, expand=True)
    else:
        img = Image.fromarray(pic.rgb, "RGB")
    img.info["original_size"] = pic.size
    return img


def decode_cost(img: Image.Image, target: int = 224) -> int:
    """Bytes decoding and preprocessing an opened (not yet loaded) image will allocate, from its header."""
    w, h = img.size
    bands = len(img.getbands())
    per_band = 4 if img.mode in ("I", "F") else 2 if img.mode.startswith("I;16") else 1
    decoded = w * h * bands * per_band
    rgb = w * h * 3
    short, long = max(1, min(w, h)), max(w, h)
    resized = target * max(target, -(-long * target // short)) * 3
    return 2 * decoded + rgb + resized  # the decoded bands, a transposed copy, RGB, the resize


def _check_cost(img: Image.Image, width: int, height: int, size: int, target: int) -> None:
    """Refuse, before decoding, an image that would cost too much memory or cannot be what it declares."""
    if img.format == "JPEG" and width * height > MAX_JPEG_PIXELS_PER_BYTE * size:
        raise UnreadableImage(
            f"decompression bomb: declares {width}×{height} pixels in {size} bytes "
            "(a forged or truncated header)"
        )
    cost = decode_cost(img, target)
    if cost > MAX_DECODE_BYTES:
        raise UnreadableImage(
            f"decompression bomb: declares {width}×{height} pixels, "
            f"{cost / 2**20:,.0f} MB to decode (limit {MAX_DECODE_BYTES / 2**20:,.0f} MB)"
        )


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


def readable_now(reason: str | None) -> bool:
    """Was a file unreadable only for want of an extra that is installed now (read it again)?"""
    return (reason == HEIF_HINT and HEIF_SUPPORTED) or (reason == RAW_HINT and raw.load_rawpy() is not None)


def open_image(path: Path | str, target: int = 224) -> Image.Image:
    """Open an image file safely (see decode_image). Raises UnreadableImage with a one-line reason."""
    data, _ = read_file(path)
    return decode_image(data, str(path), target)


def sha256_of(path: str) -> str | None:
    """The content hash of a file, or None if it cannot be read."""
    h = hashlib.sha256()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:  # reading must not change the access time `restore` keeps (only the owner may ask)
            fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            fd = os.open(path, flags)
    except OSError:
        return None
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return h.hexdigest()
