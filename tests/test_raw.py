"""Camera RAW files: real ones from cameras (tests/data/raw, see its README), decoded from their
embedded preview or given a one-line reason, in the same decoding workers as every photo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from images import photo, snapshot

from imgrank import index, raw
from imgrank.cli import cli
from imgrank.embed import load_embedder
from imgrank.errors import UnreadableImage
from imgrank.files import decode_image, walk
from imgrank.store.db import open_db

RAW_DATA = Path(__file__).parent / "data" / "raw"
pytestmark = pytest.mark.skipif(raw.load_rawpy() is None, reason="rawpy (the raw extra, in dev) is missing")


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def raw_folder(root: Path) -> dict[str, Path]:
    """Every real RAW file, a truncated CR2, and plain JPEGs in one folder."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in sorted(RAW_DATA.iterdir()):
        if f.suffix.lower() in raw.RAW_EXTENSIONS:
            out[f.name] = Path(shutil.copy2(f, root / f.name))
    data = (RAW_DATA / "CanonRaw.cr2").read_bytes()
    (root / "truncated.cr2").write_bytes(data[: len(data) // 3])
    out["truncated.cr2"] = root / "truncated.cr2"
    for i in range(3):
        photo(root / f"plain{i}.jpg", seed=i)
    return out


def test_a_folder_of_real_raw_files_scans_every_raw_embedded_or_with_a_reason(tmp_path, model_env):
    root = tmp_path / "photos"
    raws = raw_folder(root)
    before = snapshot(root)
    result = run("scan", str(root), "--json", "--jobs", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    reasons = {Path(r["path"]).name: r["reason"] for r in index.unreadable(open_db())}
    embedded = set(raws) - set(reasons)
    assert embedded == {"FujiFilm.raf"}  # the one whose camera preview survived the stripping
    assert summary["embedded"] == 3 + len(embedded) and summary["unreadable"] == len(reasons)
    for name, reason in reasons.items():
        assert name in raws and "\n" not in reason and reason, (name, reason)
    assert "truncated" in reasons["truncated.cr2"] or "LibRaw can read" in reasons["truncated.cr2"]
    assert "LibRaw can read" in reasons["CanonRaw.cr2"]
    # IMG_1361.dng declares 12 megapixels in 64 KB: a RAW bomb, refused before LibRaw decodes it
    assert reasons["IMG_1361.dng"].startswith("decompression bomb: RAW declares 4032×3024 pixels")
    assert snapshot(root) == before  # RAW files are never written
    listing = run("status", "--unreadable")
    assert "IMG_1361.dng\tdecompression bomb" in listing.output


def test_truncated_cr2_and_raw_bomb_each_get_a_reason():
    cr2 = (RAW_DATA / "CanonRaw.cr2").read_bytes()
    for cut in (len(cr2) // 2, 64, 0):
        with pytest.raises(UnreadableImage) as e:
            decode_image(cr2[:cut], "IMG_0001.CR2")
        assert str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        decode_image((RAW_DATA / "IMG_1361.dng").read_bytes(), "IMG_1361.DNG")


def test_raw_past_the_memory_budget_is_refused_before_decoding(monkeypatch):
    # Raise the pixels-a-byte check out of the way: the budget alone refuses the 12-megapixel DNG.
    monkeypatch.setattr(raw, "MAX_RAW_PIXELS_PER_BYTE", 10**6)
    with pytest.raises(UnreadableImage, match=r"MB to decode \(limit 1 MB\)"):
        raw.picture((RAW_DATA / "IMG_1361.dng").read_bytes(), max_bytes=1 << 20)


def test_embedded_preview_is_decoded_as_jpeg_with_the_raw_size():
    img = decode_image((RAW_DATA / "FujiFilm.raf").read_bytes(), "DSCF0001.RAF")
    assert img.mode == "RGB" and img.size == (160, 120)  # the camera's preview
    w, h = img.info["original_size"]
    assert w > 3000 and h > 3000  # the sensor's size, not the preview's


def test_raw_without_a_usable_preview_is_demosaiced_at_half_size(monkeypatch):
    # Panasonic.rw2's preview is an 8×8 placeholder: the RAW data itself is demosaiced (the data was
    # stripped from this file, so the bomb check is lifted to let LibRaw decode what is there).
    monkeypatch.setattr(raw, "MAX_RAW_PIXELS_PER_BYTE", 10**6)
    data = (RAW_DATA / "Panasonic.rw2").read_bytes()
    pic = raw.picture(data, max_bytes=1 << 30)
    assert pic.jpeg is None and pic.rgb is not None
    img = decode_image(data, "P1000001.RW2")
    w, h = img.info["original_size"]
    assert img.mode == "RGB" and abs(img.size[0] - w / 2) <= 2 and abs(img.size[1] - h / 2) <= 2


def test_walk_finds_raw_files_whatever_their_case(tmp_path):
    for name in ("a.CR2", "b.nef", "c.Arw", "d.dng", "e.RAF", "f.orf", "g.rw2", "h.cr3", "i.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in walk(tmp_path)) == [
        "a.CR2", "b.nef", "c.Arw", "d.dng", "e.RAF", "f.orf", "g.rw2", "h.cr3"
    ]  # fmt: skip


def test_without_the_raw_extra_one_line_says_how_to_enable_then_a_rescan_reads_them(tmp_path, model_env):
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy2(RAW_DATA / "FujiFilm.raf", root / "DSCF0001.RAF")
    shutil.copy2(RAW_DATA / "Nikon.nef", root / "DSC_0001.NEF")
    photo(root / "plain.jpg")
    # A Python where rawpy cannot be imported (in the scan and in its decoding workers alike).
    shadow = tmp_path / "no-rawpy"
    shadow.mkdir()
    (shadow / "rawpy.py").write_text("raise ImportError('rawpy is not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow)}
    scan = [sys.executable, "-m", "imgrank", "scan", str(root), "--jobs", "1"]
    result = subprocess.run(scan, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    hints = [line for line in result.stderr.splitlines() if "raw extra" in line]
    assert hints == ["2 RAW files: " + raw.RAW_HINT]
    assert "pip install 'imgrank[raw]'" in hints[0]

    # The extra installed: the next scan reads them, though neither file changed.
    result = subprocess.run(scan, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "raw extra" not in result.stderr
    reasons = {Path(r["path"]).name: r["reason"] for r in index.unreadable(open_db())}
    assert set(reasons) == {"DSC_0001.NEF"}  # the preview-less stub; the RAF is embedded now


def test_raw_files_decode_in_the_bounded_workers(tmp_path, tiny_model):
    root = tmp_path / "photos"
    raws = raw_folder(root)
    db = open_db()
    index.add_roots(db, [root])
    result = index.scan(db, [root], load_embedder(str(tiny_model)), jobs=2)
    assert (result.embedded, result.unreadable) == (3 + 1, len(raws) - 1)


def test_a_raw_past_the_workers_memory_limit_gets_a_reason_not_a_crash(tmp_path):
    # A decoding worker's address-space limit (workers._limit_memory), set low in a real process, with
    # the header checks lifted: LibRaw's allocation fails, and the file gets the one-line reason.
    script = tmp_path / "decode.py"
    script.write_text(
        "import sys\n"
        "from imgrank import raw, workers\n"
        "from imgrank.errors import UnreadableImage\n"
        "from imgrank.files import decode_image\n"
        "raw.MAX_RAW_PIXELS_PER_BYTE = 10**9\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "workers._limit_memory(40 << 20)\n"
        "try:\n"
        "    print('decoded', decode_image(data, 'IMG_1361.DNG').size)\n"
        "except UnreadableImage as e:\n"
        "    print('reason:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(RAW_DATA / "IMG_1361.dng")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reason: out of memory while decoding"


def test_a_preview_is_turned_as_the_camera_was_held_unless_it_says_so_itself(monkeypatch):
    import io

    from PIL import Image

    from imgrank import files

    def jpeg(exif_orientation: int | None) -> bytes:
        buf, img = io.BytesIO(), Image.new("RGB", (300, 200), "red")
        exif = Image.Exif()
        if exif_orientation:
            exif[0x0112] = exif_orientation
        img.save(buf, "JPEG", exif=exif)
        return buf.getvalue()

    # LibRaw's flip 6 (held turned clockwise): the preview, landscape as the sensor saw it, is turned.
    monkeypatch.setattr(
        files, "picture", lambda data, budget: raw.Picture(jpeg(None), None, 270, (4000, 6000))
    )
    img = decode_image(b"raw bytes", "IMG_1.CR2")
    assert img.size == (200, 300) and img.info["original_size"] == (4000, 6000)
    # A preview with its own EXIF orientation is turned by that alone, not twice.
    monkeypatch.setattr(files, "picture", lambda data, budget: raw.Picture(jpeg(6), None, 270, (4000, 6000)))
    assert decode_image(b"raw bytes", "IMG_1.CR2").size == (200, 300)
