"""Labels: relabel files and folders (indexing them first), clear, history, counts, failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgrank.cli import cli
from imgrank.errors import ImgrankError
from imgrank.store.db import open_db
from imgrank.store.labels import history, label_counts, set_label


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def photos(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"IMG_{seed:02d}{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_set_label_keeps_an_append_only_history():
    db = open_db()
    assert set_label(db, "a" * 64, "delete", "user", "/p/a.jpg")
    assert not set_label(db, "a" * 64, "delete", "user", "/p/a.jpg")
    set_label(db, "a" * 64, "keep", "reviewed")
    set_label(db, "b" * 64, "delete", "deleted")
    set_label(db, "b" * 64, None, "user")
    assert label_counts(db) == {
        "total": 1,
        "by_label": {"keep": 1, "delete": 0},
        "by_source": {"reviewed": {"keep": 1}},
    }
    assert [(h["label"], h["source"]) for h in history(db)] == [
        (None, "user"),
        ("delete", "deleted"),
        ("keep", "reviewed"),
        ("delete", "user"),  # set once: the same label again appended nothing
    ]
    with pytest.raises(ImgrankError, match="unknown label"):
        set_label(db, "a" * 64, "maybe", "user")


def test_relabel_folders_outside_any_root_indexes_and_labels_them(model_env, tmp_path):
    keep = photos(tmp_path / "keep", 3, seed=1)
    delete = photos(tmp_path / "delete", 2, seed=2)
    assert invoke("relabel", "keep", str(tmp_path / "keep")).exit_code == 0
    result = invoke("relabel", "delete", str(tmp_path / "delete"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["applied"] == 2
    db = open_db()
    assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 5
    data = json.loads(invoke("labels", "--json").output)
    assert data["counts"]["by_label"] == {"keep": 3, "delete": 2}
    assert data["counts"]["by_source"] == {"user": {"keep": 3, "delete": 2}}
    assert {h["path"] for h in data["recent"]} == {str(p) for p in keep + delete}
    text = invoke("labels").output
    assert "2 delete, 3 keep" in text and "IMG_01000.jpg" in text


def test_a_missing_or_unreadable_path_fails_alone(model_env, tmp_path):
    good = photos(tmp_path, 2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "nope.jpg"
    result = invoke("relabel", "delete", str(good[0]), str(missing), str(broken), str(good[1]))
    assert result.exit_code == 1
    assert f"{missing}: no such file or folder" in result.output
    assert str(broken) in result.output
    assert isinstance(result.exception, SystemExit), result.exception  # an exit, not a crash
    assert label_counts(open_db())["by_label"]["delete"] == 2


def test_paths_from_stdin_and_clear(model_env, tmp_path):
    paths = photos(tmp_path, 3)
    result = invoke("relabel", "keep", "-", input="\n".join(str(p) for p in paths) + "\n")
    assert result.exit_code == 0, result.output
    assert label_counts(open_db())["by_label"]["keep"] == 3
    assert invoke("relabel", "clear", str(paths[0])).exit_code == 0
    db = open_db()
    assert label_counts(db)["by_label"]["keep"] == 2
    assert history(db, 1)[0]["label"] is None


def test_a_label_belongs_to_the_content_not_the_name(model_env, tmp_path):
    (original,) = photos(tmp_path / "a", 1)
    copy = tmp_path / "b" / "renamed.jpg"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    invoke("relabel", "delete", str(original))
    invoke("relabel", "delete", str(copy))
    assert label_counts(open_db())["total"] == 1


def test_crlf_stdin_and_a_relabel_that_changes_nothing(model_env, tmp_path):
    paths = photos(tmp_path / "p", 3)
    crlf = "".join(f"{p}\r\n" for p in paths)
    first = invoke("relabel", "delete", "-", input=crlf)
    assert first.exit_code == 0 and first.exception is None, first.output
    assert "3 photos (3 changed" in first.stdout
    db = open_db()
    assert {h["path"] for h in history(db)} == {str(p) for p in paths}  # no '\r' kept
    rows = db.execute("SELECT count(*) FROM label_history").fetchone()[0]
    again = invoke("relabel", "delete", *map(str, paths))
    assert again.exit_code == 0 and "3 photos (unchanged)" in again.stdout
    assert db.execute("SELECT count(*) FROM label_history").fetchone()[0] == rows
    other = invoke("relabel", "keep", str(paths[0]))
    assert other.exit_code == 0
    assert db.execute("SELECT count(*) FROM label_history").fetchone()[0] == rows + 1


def test_a_photo_whose_mtime_moves_right_after_relabel_read_it_is_labelled(model_env, tmp_path, monkeypatch):
    """An `order` or `restore` in another process can set a photo's mtime just after relabel read
    it (seen in tests/test_concurrency.py, where they ran back to back and three reads in a row
    were overtaken): the label goes to the content read, with no read again and no failure."""
    import os

    from imgrank import index

    target, other = photos(tmp_path, 2)
    real = index.index_paths
    calls = []

    def touched_right_after_reading(db, paths, *args, **kwargs):
        result = real(db, paths, *args, **kwargs)
        calls.append(sorted(map(str, paths)))
        t = os.lstat(target).st_mtime_ns + 10**9
        os.utime(target, ns=(t, t))
        return result

    monkeypatch.setattr(index, "index_paths", touched_right_after_reading)
    result = invoke("relabel", "delete", str(target), str(other))
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "failed" not in result.output and "2 photos" in result.output
    assert calls == [sorted([str(target), str(other)])]  # read once
    db = open_db()
    assert label_counts(db)["by_label"]["delete"] == 2
    assert index.needs_work(db, [str(target)]) == {str(target)}  # a scan reads it again; the label stays

    # One gone since it was indexed fails, and its content keeps its label.
    os.unlink(other)
    result = invoke("relabel", "keep", str(target), str(other))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{other}: no such file or folder" in result.output
    assert label_counts(open_db())["by_label"] == {"keep": 1, "delete": 1}


@pytest.mark.parametrize("n", ["0", "-3"])
def test_labels_n_must_be_positive(n):
    result = invoke("labels", "-n", n)
    assert result.exit_code == 2 and "-n" in result.output
    assert invoke("labels", "-n", "1").exit_code == 0
