"""Only the formats imgrank says it reads: a PostScript file named `.jpg` never starts Ghostscript,
in the scan's workers, in relabel, in the daemon's indexing or in the review page's pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from images import every_format, photo
from PIL import Image

from imgrank import files, index, thumbs
from imgrank.cli import cli
from imgrank.embed import load_embedder
from imgrank.errors import UnreadableImage
from imgrank.store.db import open_db

# 107 bytes of PostScript, as the red team planted it: Pillow identifies it as EPS and loads it
# by running `gs` (a looping one held a scan for 600 s and left `gs` running).
POSTSCRIPT = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
    b"(GHOSTSCRIPT-RAN) print flush 0 0 moveto 8 8 lineto stroke showpage\n"
)
REASON = "not an image (unrecognised format)"


@pytest.fixture
def fake_gs(tmp_path, monkeypatch):
    """A `gs` first on PATH that records each start and prints to stdout. Returns the record's path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "gs-started"
    gs = bin_dir / "gs"
    gs.write_text(f'#!/bin/sh\necho "$*" >> "{started}"\necho GHOSTSCRIPT-RAN\nexit 1\n')
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None, raising=False)  # looked up once per process
    return started


def postscript(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(POSTSCRIPT)
    return path


def test_pillow_would_hand_this_file_to_ghostscript():
    """The planted file is what it claims: without the allow-list Pillow opens it as EPS."""
    import io

    assert Image.open(io.BytesIO(POSTSCRIPT)).format == "EPS"


def test_a_postscript_jpg_in_a_scan_is_unreadable_and_never_starts_gs(tmp_path, model_env, fake_gs):
    root = tmp_path / "photos"
    good = photo(root / "good.jpg", seed=1)
    bad = postscript(root / "holiday.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "imgrank", "scan", "--json", str(root)],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert not fake_gs.exists(), f"gs was started: {fake_gs.read_text()}"
    assert proc.returncode == 0, proc.stderr
    assert "GHOSTSCRIPT" not in proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)  # stdout holds the data and nothing else
    assert summary["embedded"] == 1 and summary["unreadable"] == 1
    reasons = {r["path"]: r["reason"] for r in index.unreadable(open_db())}
    assert reasons == {str(bad): REASON}
    assert str(good) not in reasons


def test_relabel_of_a_postscript_jpg_never_starts_gs(tmp_path, model_env, fake_gs):
    bad = postscript(tmp_path / "photos" / "receipt.jpg")
    photo(tmp_path / "photos" / "fine.jpg", seed=2)
    result = CliRunner().invoke(cli, ["relabel", "delete", str(tmp_path / "photos")])
    assert not fake_gs.exists(), f"gs was started: {fake_gs.read_text()}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "GHOSTSCRIPT" not in result.output
    reasons = {r["path"]: r["reason"] for r in index.unreadable(open_db())}
    assert reasons == {str(bad): REASON}


def test_the_daemons_indexing_of_a_postscript_jpg_never_starts_gs(tmp_path, tiny_model, fake_gs):
    """The daemon indexes what it sees through index_paths, in the decoding workers (jobs=1)."""
    db, embedder = open_db(), load_embedder(str(tiny_model))
    root = tmp_path / "photos"
    photo(root / "fine.jpg", seed=3)
    bad = postscript(root / "scan.jpg")
    index.add_roots(db, [root])
    index.index_paths(db, [root / "fine.jpg", bad], embedder, jobs=1)
    assert not fake_gs.exists(), f"gs was started: {fake_gs.read_text()}"
    assert {r["path"]: r["reason"] for r in index.unreadable(db)} == {str(bad): REASON}


def test_the_review_pages_pictures_of_a_postscript_jpg_never_start_gs(tmp_path, fake_gs):
    """/large/<sha> and /thumb/<sha> decode the file at its path now: it may have been replaced."""
    bad = postscript(tmp_path / "replaced.jpg")
    with pytest.raises(UnreadableImage, match="not an image"):
        thumbs.large_jpeg(str(bad))
    with pytest.raises(UnreadableImage, match="not an image"):
        thumbs.thumbnail("ab" * 32, str(bad))
    with pytest.raises(UnreadableImage, match="not an image"):
        files.open_image(bad)
    assert not fake_gs.exists(), f"gs was started: {fake_gs.read_text()}"


def test_every_format_imgrank_reads_is_on_the_allow_list(tmp_path):
    for name, path in every_format(tmp_path).items():
        img = files.open_image(path)
        assert img.size[0] > 0, name
    assert set(files.image_formats()) <= set(files.IMAGE_FORMATS)
    assert not {"EPS", "PS", "PDF"} & set(files.IMAGE_FORMATS)


def test_a_camera_mpo_jpeg_is_read(tmp_path):
    """Many cameras write JPEGs with a second picture (MPO): Pillow names that format MPO, not JPEG."""
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "blue")]
    path = tmp_path / "DSCF0001.jpg"
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(path).format == "MPO"
    assert files.open_image(path).size == (64, 48)
