"""RAW+JPEG pairs: `IMG_1.RAF` + `IMG_1.JPG` in one folder are one photo: one line in `top`, one time
from `order`, one label from `relabel`, and a deletion learnt only when both are gone."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import activate_random_head
from images import photo
from test_raw import RAW_DATA

from imgrank import pairs, raw
from imgrank.cli import cli
from imgrank.store import labels
from imgrank.store.db import open_db

pytestmark = pytest.mark.skipif(raw.load_rawpy() is None, reason="rawpy (the raw extra, in dev) is missing")


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def paired_folder(root: Path) -> Path:
    """A real RAF with its JPEG, a RAF alone, a preview-less NEF alone and plain JPEGs; scanned and scored."""
    root.mkdir(parents=True)
    shutil.copy2(RAW_DATA / "FujiFilm.raf", root / "DSCF0001.RAF")
    photo(root / "DSCF0001.JPG", seed=1)
    raf = bytearray((RAW_DATA / "FujiFilm.raf").read_bytes())
    raf[-1] ^= 0xFF  # other content (the last byte of its sensor data), the same preview
    (root / "DSCF0002.RAF").write_bytes(raf)
    shutil.copy2(RAW_DATA / "Nikon.nef", root / "DSC_0003.NEF")  # unreadable: not in the order
    photo(root / "DSC_0003.jpg", seed=3)  # ... but its JPEG is
    for i in range(3):
        photo(root / f"plain{i}.jpg", seed=10 + i)
    result = run("scan", str(root), "--jobs", "1")
    assert result.exit_code == 0, result.output
    activate_random_head()
    assert run("score").exit_code == 0
    return root


def test_a_pair_is_one_line_in_top_and_one_time_from_order(tmp_path, model_env):
    root = paired_folder(tmp_path / "photos")
    before = {p.name: os.stat(p).st_mtime_ns for p in root.iterdir()}
    top = run("top", "-n", "50", "--json")
    assert top.exit_code == 0, top.output
    shown = sorted(Path(r["path"]).name for r in json.loads(top.stdout))
    # the pair by its JPEG, the lone RAF by its preview; the NEF's JPEG stands for the unreadable NEF
    assert shown == ["DSCF0001.JPG", "DSCF0002.RAF", "DSC_0003.jpg", "plain0.jpg", "plain1.jpg", "plain2.jpg"]

    result = run("order", "--step", "5")
    assert result.exit_code == 0, result.output
    t = {p.name: os.stat(p).st_mtime_ns for p in root.iterdir()}
    assert t["DSCF0001.RAF"] == t["DSCF0001.JPG"]
    assert t["DSC_0003.NEF"] == before["DSC_0003.NEF"]  # unreadable: imgrank knows no photo in it
    photos = [t[n] for n in shown]
    assert len(set(photos)) == len(photos)  # every photo its own place
    assert "ordered 6 photos: 7 mtimes set" in result.output

    assert run("restore").exit_code == 0
    assert {p.name: os.stat(p).st_mtime_ns for p in root.iterdir()} == before


def test_relabel_of_either_file_labels_the_pair_and_status_counts_pairs(tmp_path, model_env):
    root = paired_folder(tmp_path / "photos")
    result = run("relabel", "delete", str(root / "DSCF0001.RAF"))
    assert result.exit_code == 0, result.output
    db = open_db()
    current = labels.current_labels(db)
    shas = dict(db.execute("SELECT path, sha256 FROM files").fetchall())
    assert current[shas[str(root / "DSCF0001.RAF")]] == "delete"
    assert current[shas[str(root / "DSCF0001.JPG")]] == "delete"
    assert shas[str(root / "DSCF0002.RAF")] not in current
    top = run("top", "-n", "50")
    assert [line for line in top.output.splitlines() if "[delete]" in line][0].endswith("DSCF0001.JPG")

    status = run("status")
    assert "(1 RAW+JPEG pairs, one photo each)" in status.output


def test_members_are_the_files_of_one_photo(tmp_path):
    for name in ("A.CR2", "A.JPG", "A.txt", "B.NEF", "C.jpg", "C.png", "D.ARW", "D.DNG"):
        (tmp_path / name).write_bytes(b"x")
    assert pairs.members(str(tmp_path / "A.JPG")) == [str(tmp_path / "A.JPG"), str(tmp_path / "A.CR2")]
    assert pairs.members(str(tmp_path / "A.CR2")) == [str(tmp_path / "A.CR2"), str(tmp_path / "A.JPG")]
    assert pairs.members(str(tmp_path / "B.NEF")) == [str(tmp_path / "B.NEF")]
    assert pairs.members(str(tmp_path / "C.jpg")) == [str(tmp_path / "C.jpg")]  # no RAW: two photos
    assert pairs.members(str(tmp_path / "D.ARW")) == [str(tmp_path / "D.ARW")]  # two RAWs: two photos
    assert pairs.members(str(tmp_path / "gone.jpg")) == [str(tmp_path / "gone.jpg")]


def test_the_daemon_learns_a_delete_only_when_both_files_are_gone(tmp_path, model_env):
    from imgrank.daemon import loop

    root = paired_folder(tmp_path / "photos")
    db = open_db()
    shas = dict(db.execute("SELECT path, sha256 FROM files").fetchall())
    w = loop.Watcher([root], loop.WatchConfig(settle=0.3, reorder_interval=0.2, heartbeat=0.5))
    t = threading.Thread(target=w.run, daemon=True)
    t.start()

    def wait(condition):
        for _ in range(1200):
            if condition():
                return True
            threading.Event().wait(0.05)
        return False

    try:
        assert wait(w.ready.is_set)
        (root / "DSCF0001.RAF").unlink()  # the RAW goes, the JPEG stays: nothing learnt
        row = "SELECT state FROM files WHERE path = ?"
        assert wait(lambda: open_db().execute(row, [str(root / "DSCF0001.RAF")]).fetchone()[0] == "missing")
        assert labels.current_labels(open_db()) == {}
        (root / "DSCF0001.JPG").unlink()  # now the photo is gone
        assert wait(lambda: labels.current_labels(open_db()))
    finally:
        w.stop()
        t.join(timeout=60)
    assert labels.current_labels(open_db()) == {shas[str(root / "DSCF0001.JPG")]: "delete"}


def test_order_xmp_rates_both_files_of_a_pair_alike(tmp_path, model_env):
    root = paired_folder(tmp_path / "photos")
    assert run("order", "--xmp").exit_code == 0
    jpg, raf = (root / "DSCF0001.JPG.xmp").read_bytes(), (root / "DSCF0001.RAF.xmp").read_bytes()
    assert jpg == raf and b"xmp:Rating=" in raf  # darktable rates the RAW as its JPEG
    assert not (root / "DSC_0003.NEF.xmp").exists()  # unreadable: not rated

    assert run("order", "--xmp", "--xmp-style", "lightroom").exit_code == 0
    assert b"xmp:Rating=" in (root / "DSCF0001.xmp").read_bytes()  # Lightroom's one sidecar for both
    assert run("restore").exit_code == 0
    assert not list(root.glob("*.xmp"))


def test_relabel_of_a_jpeg_whose_raw_cannot_be_read_labels_it_and_reports_no_failure(tmp_path, model_env):
    root = paired_folder(tmp_path / "photos")
    result = run("relabel", "keep", str(root / "DSC_0003.jpg"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] == 1 and json.loads(result.stdout)["failed"] == []
    result = run("relabel", "keep", str(root / "DSCF0001.JPG"), "--json")
    assert json.loads(result.stdout)["applied"] == 1  # one photo, though both of its files are labelled
    result = run("relabel", "keep", str(root / "DSC_0003.NEF"))  # named itself: its own reason
    assert result.exit_code == 1 and "DSC_0003.NEF" in result.stderr


def test_trash_moves_both_files_of_a_pair_and_undo_brings_both_back(tmp_path, model_env):
    import subprocess
    import sys

    root = paired_folder(tmp_path / "photos")
    assert run("relabel", "delete", str(root / "DSCF0001.JPG")).exit_code == 0
    home = tmp_path / "home"
    (home / ".local" / "share").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}

    def imgrank(*args):
        cmd = [sys.executable, "-m", "imgrank", *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc

    dry = imgrank("trash", "--labelled", "delete", "--dry-run")
    assert "DSCF0001.RAF" in dry.stdout + dry.stderr and "DSCF0001.JPG" in dry.stdout + dry.stderr
    imgrank("trash", "--labelled", "delete")
    assert not (root / "DSCF0001.JPG").exists() and not (root / "DSCF0001.RAF").exists()
    assert (root / "DSCF0002.RAF").exists()  # a RAF of its own is another photo
    trashed = sorted(p.name for p in (home / ".local" / "share" / "Trash" / "files").iterdir())
    assert trashed == ["DSCF0001.JPG", "DSCF0001.RAF"]
    imgrank("trash", "--undo")
    assert (root / "DSCF0001.JPG").exists() and (root / "DSCF0001.RAF").exists()
