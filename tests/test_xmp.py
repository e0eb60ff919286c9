"""`imgrank order --xmp`: the order as XMP ratings in sidecars, read back by exiftool (a real reader),
existing sidecars edited in place, and `restore` putting every sidecar back byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_order import scored_folder

from imgrank import sidecars
from imgrank.cli import cli
from imgrank.store import sidecars as sidecar_records
from imgrank.store.db import open_db

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool (Debian libimage-exiftool-perl) missing"
)

# A sidecar as darktable writes it (trimmed): other programs' fields, a history, an xmp:Rating.
DARKTABLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:darktable="http://darktable.sf.net/"
    exif:DateTimeOriginal="2024:05:01 10:11:12"
    xmp:Rating="4"
    xmpMM:DerivedFrom="img000.jpg"
    darktable:xmp_version="5"
    darktable:history_end="1">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
# One in element form, with a title and no digiKam namespace yet (as Lightroom or Bridge write).
ELEMENTS = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/">\r
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\r
<rdf:Description rdf:about="" xmlns:xap="http://ns.adobe.com/xap/1.0/"\r
  xmlns:dc="http://purl.org/dc/elements/1.1/">\r
<xap:Rating>2</xap:Rating>\r
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Lake</rdf:li></rdf:Alt></dc:title>\r
</rdf:Description>\r
</rdf:RDF>\r
</x:xmpmeta>\r
"""


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def exif(*paths: Path) -> dict[str, dict]:
    """What exiftool reads from these sidecars: {file name: tags}."""
    out = subprocess.run(
        [EXIFTOOL, "-j", "-n", "-XMP:Rating", "-XMP-digiKam:PickLabel", "-XMP-dc:Title",
         "-XMP-xmpMM:DerivedFrom", *map(str, paths)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {Path(d["SourceFile"]).name: d for d in json.loads(out.stdout)}


def folder(tmp_path, n=10) -> tuple[object, list[Path]]:
    db = open_db()
    # Scores falling with the index: img000 is the least wanted, img009 the most.
    return db, scored_folder(db, tmp_path / "photos", [1 - i / n for i in range(n)])


def state(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.iterdir())}


@needs_exiftool
def test_order_xmp_gives_ratings_exiftool_reads_darktable_style(tmp_path):
    db, photos = folder(tmp_path)
    result = run("order", "--xmp", "--top", "2")
    assert result.exit_code == 0, result.output
    assert "XMP ratings (darktable): 10 sidecars (10 created), 2 marked rejected" in result.output
    tags = exif(*(Path(f"{p}.xmp") for p in photos))
    got = [tags[f"{p.name}.xmp"]["Rating"] for p in photos]
    # Least wanted first: the two --top are rejected (-1), then fifths rising to 5, most wanted.
    assert got == [-1, -1, 2, 2, 3, 3, 4, 4, 5, 5]


@needs_exiftool
def test_digikam_style_marks_rejects_with_pick_label_and_lightroom_drops_the_extension(tmp_path):
    db, photos = folder(tmp_path)
    assert run("order", "--xmp", "--xmp-style", "digikam", "--top", "3").exit_code == 0
    tags = exif(*(Path(f"{p}.xmp") for p in photos))
    first, last = tags[f"{photos[0].name}.xmp"], tags[f"{photos[-1].name}.xmp"]
    assert (first["Rating"], first["PickLabel"]) == (1, 1)  # digiKam: rated 1 and rejected
    assert last["Rating"] == 5 and "PickLabel" not in last
    assert [tags[f"{p.name}.xmp"].get("PickLabel") for p in photos[:4]] == [1, 1, 1, None]

    assert run("order", "--xmp", "--xmp-style", "lightroom").exit_code == 0
    tags = exif(*(p.with_suffix(".xmp") for p in photos))
    assert [tags[p.with_suffix(".xmp").name]["Rating"] for p in photos] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


@needs_exiftool
def test_an_existing_sidecar_is_edited_in_place_only_the_rating_changes(tmp_path):
    db, photos = folder(tmp_path)
    dt = Path(f"{photos[0]}.xmp")
    dt.write_bytes(DARKTABLE)
    el = Path(f"{photos[9]}.xmp")
    el.write_bytes(ELEMENTS)
    os.chmod(el, 0o600)
    assert run("order", "--xmp", "--top", "1").exit_code == 0
    assert dt.read_bytes() == DARKTABLE.replace(b'xmp:Rating="4"', b'xmp:Rating="-1"')
    assert el.read_bytes() == ELEMENTS.replace(b"<xap:Rating>2<", b"<xap:Rating>5<")
    assert os.stat(el).st_mode & 0o777 == 0o600
    tags = exif(dt, el)
    assert tags[dt.name]["Rating"] == -1 and tags[dt.name]["DerivedFrom"] == "img000.jpg"
    assert tags[el.name]["Rating"] == 5 and tags[el.name]["Title"] == "Lake"

    # digiKam's fields go into the same file without touching darktable's.
    assert run("order", "--xmp", "--xmp-style", "digikam", "--top", "1").exit_code == 0
    assert exif(dt)[dt.name]["PickLabel"] == 1 and b"darktable:history_end" in dt.read_bytes()


def test_restore_puts_every_sidecar_back_byte_for_byte_and_every_mtime(tmp_path):
    db, photos = folder(tmp_path)
    root = photos[0].parent
    Path(f"{photos[0]}.xmp").write_bytes(DARKTABLE)
    Path(f"{photos[9]}.xmp").write_bytes(ELEMENTS)
    photos[5].with_suffix(".xmp").write_bytes(b"<x:xmpmeta/>")  # not XMP imgrank can edit
    before = state(root)
    result = run("order", "--xmp", "--top", "3")
    assert result.exit_code == 0, result.output
    result = run("order", "--xmp", "--xmp-style", "digikam")  # a second style, a second write of the first
    assert result.exit_code == 0, result.output
    result = run("order", "--xmp", "--xmp-style", "lightroom")
    assert result.exit_code == 1  # the one sidecar it cannot edit (img005.xmp) is reported, the rest written
    assert "img005.xmp: no rdf:Description" in result.stderr
    assert state(root) != before

    result = run("restore")
    assert result.exit_code == 0, result.output
    assert "XMP sidecars: 2 put back, 17 removed" in result.output
    assert state(root) == before  # every photo's bytes and mtime, every sidecar's bytes, no new file
    assert sidecar_records.count(db) == 0


def test_restore_leaves_a_sidecar_changed_since_unless_forced(tmp_path):
    db, photos = folder(tmp_path, 3)
    side = Path(f"{photos[0]}.xmp")
    side.write_bytes(DARKTABLE)
    assert run("order", "--xmp").exit_code == 0
    side.write_bytes(
        side.read_bytes().replace(b'xmp:Rating="1"', b'xmp:Rating="3"')
    )  # the owner, in darktable
    result = run("restore")
    assert result.exit_code == 1 and "sidecar changed since imgrank wrote it" in result.stderr
    assert b'xmp:Rating="3"' in side.read_bytes() and not Path(f"{photos[1]}.xmp").exists()
    assert run("restore", "--force").exit_code == 0
    assert side.read_bytes() == DARKTABLE


def test_the_original_is_recorded_before_the_first_write(tmp_path, monkeypatch):
    db, photos = folder(tmp_path, 2)
    side = Path(f"{photos[0]}.xmp")
    side.write_bytes(DARKTABLE)
    real = sidecars._write
    calls = []

    def crash_after_first(path, data, *args):
        if calls:
            raise KeyboardInterrupt  # the process dies here
        calls.append(path)
        real(path, data, *args)

    monkeypatch.setattr(sidecars, "_write", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        sidecars.write_ratings(db, [[str(p)] for p in photos], "darktable")
    monkeypatch.setattr(sidecars, "_write", real)
    recorded = sidecar_records.originals(db)
    assert recorded[str(side)].original == DARKTABLE  # recorded though the second write never came
    assert str(photos[1]) + ".xmp" in recorded and recorded[str(photos[1]) + ".xmp"].original is None
    result = run("restore")
    assert result.exit_code == 0, result.output
    assert side.read_bytes() == DARKTABLE and not Path(f"{photos[1]}.xmp").exists()


def test_set_field_adds_a_missing_rating_and_namespace_keeping_every_other_byte():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="r"><rdf:Description rdf:about="" a="1"/>'
    out = sidecars.set_field(xmp, sidecars.XMP_NS, b"xmp", b"Rating", b"5")
    assert out == xmp.replace(
        b"<rdf:Description", b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"'
    )
    with pytest.raises(sidecars.SidecarError):  # the prefix taken by another namespace: not guessed
        sidecars.set_field(
            xmp.replace(b'a="1"', b'xmlns:xmp="other"'), sidecars.XMP_NS, b"xmp", b"Rating", b"5"
        )


def test_a_sidecar_that_is_a_link_is_never_written_through(tmp_path):
    db, photos = folder(tmp_path, 2)
    target = tmp_path / "elsewhere.xmp"
    target.write_bytes(DARKTABLE)
    os.symlink(target, f"{photos[0]}.xmp")
    result = run("order", "--xmp")
    assert result.exit_code == 1 and "a link" in result.stderr
    assert target.read_bytes() == DARKTABLE


def test_watch_xmp_writes_ratings_as_the_daemon_reorders(tmp_path, model_env):
    import threading

    from helpers import activate_random_head
    from images import photo

    from imgrank.daemon import loop

    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    assert run("scan", str(root)).exit_code == 0
    activate_random_head()
    assert run("score").exit_code == 0
    cfg = loop.WatchConfig(settle=0.3, reorder_interval=0.2, heartbeat=0.5, xmp=True, xmp_style="digikam")
    w = loop.Watcher([root], cfg)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        for _ in range(600):
            if w.counters["reorders"] >= 1 and len(sidecar_records.originals(open_db())) == 3:
                break
            threading.Event().wait(0.1)
    finally:
        w.stop()
        t.join(timeout=60)
    assert sorted(p.name for p in root.glob("*.xmp")) == ["p0.jpg.xmp", "p1.jpg.xmp", "p2.jpg.xmp"]
    assert all(b"xmp:Rating=" in p.read_bytes() for p in root.glob("*.xmp"))
    assert run("restore").exit_code == 0 and not list(root.glob("*.xmp"))


def test_restore_of_one_folder_puts_back_only_its_sidecars_and_json_tells_them(tmp_path):
    db = open_db()
    a = scored_folder(db, tmp_path / "a", [0.9, 0.1])
    b = scored_folder(db, tmp_path / "b", [0.8, 0.2])
    result = run("order", "--xmp", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["xmp"] | {"failed": []} == {
        "written": 4, "created": 4, "unchanged": 0, "rejected": 0, "failed": []
    }  # fmt: skip
    result = run("restore", str(tmp_path / "a"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sidecars"]["removed"] == 2
    assert not list((tmp_path / "a").glob("*.xmp")) and len(list((tmp_path / "b").glob("*.xmp"))) == 2
    assert all(Path(f"{p}.xmp").exists() for p in b) and not any(Path(f"{p}.xmp").exists() for p in a)


def test_a_crash_between_recording_and_writing_leaves_nothing_restore_cannot_put_back(tmp_path, monkeypatch):
    db, photos = folder(tmp_path, 4)
    side = Path(f"{photos[0]}.xmp")
    side.write_bytes(DARKTABLE)
    assert run("order", "--xmp").exit_code == 0  # imgrank's bytes in every sidecar
    real = sidecars._write

    def crash(path, data, *args):
        raise KeyboardInterrupt  # dies after the batch was recorded, before the first new write

    monkeypatch.setattr(sidecars, "_write", crash)
    with pytest.raises(KeyboardInterrupt):  # --top 2: new values for the two least wanted
        sidecars.write_ratings(db, [[str(p)] for p in photos], "darktable", top=2)
    monkeypatch.setattr(sidecars, "_write", real)
    result = run("restore")  # no --force: the bytes on disk are the ones imgrank wrote before
    assert result.exit_code == 0, result.output
    assert side.read_bytes() == DARKTABLE and not Path(f"{photos[1]}.xmp").exists()
