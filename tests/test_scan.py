"""`imgrank scan` and `imgrank status`: identity, incremental work, bad files, resumption."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from images import bad_files, every_format, photo, snapshot
from PIL import Image

from imgrank import index
from imgrank.cli import cli
from imgrank.db import open_db
from imgrank.embed import load_embedder


@pytest.fixture
def embedder(tiny_model):
    return load_embedder(str(tiny_model))


@pytest.fixture
def count_decodes(monkeypatch):
    """Count real decodes (scans run with jobs=1 so the counter sees every one)."""
    calls = []
    real = index.decode_image

    def counting(data, name="", target=224):
        calls.append(name)
        return real(data, name, target)

    monkeypatch.setattr(index, "decode_image", counting)
    return calls


def run(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_scan_reads_every_format_and_records_every_bad_file(tmp_path, model_env):
    root = tmp_path / "photos"
    good = every_format(root)
    bad = bad_files(root / "bad")
    big = root / "panorama.jpg"
    Image.new("RGB", (9000, 8000), "teal").save(
        big
    )  # 72 megapixels: a real large photo, decoded in draft mode
    os.mkfifo(root / "pipe.jpg")  # never opened: a scan must not hang on it
    (root / ".thumbnails").mkdir()
    photo(root / ".thumbnails" / "t.jpg", seed=7)  # hidden folder: skipped
    os.symlink("/usr/share", root / "outside")  # a link out of the root: not followed
    os.symlink(root, root / "loop")  # a link loop: not followed
    before = snapshot(root)

    result = run("scan", str(root), "--json", "--jobs", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["new"] == len(good) + 1
    assert summary["unreadable"] == len(bad)
    assert summary["embedded"] == len(good) + 1

    reasons = {r["path"]: r["reason"] for r in index.unreadable(open_db())}
    assert set(reasons) == {str(p) for p in bad.values()}
    assert "0 bytes" in reasons[str(bad["empty"])]
    assert "truncated" in reasons[str(bad["truncated"])]
    assert "not an image" in reasons[str(bad["not_image"])]
    assert "decompression bomb" in reasons[str(bad["bomb"])]
    assert snapshot(root) == before  # same bytes, same mtimes

    listing = run("status", "--unreadable")
    assert str(bad["bomb"]) in listing.output and "decompression bomb" in listing.output


def test_rescan_of_unchanged_tree_decodes_nothing(tmp_path, embedder, count_decodes):
    root = tmp_path / "photos"
    for i in range(5):
        photo(root / f"p{i}.jpg", seed=i)
    bad_files(root / "bad")
    db = open_db()
    index.add_roots(db, [root])
    first = index.scan(db, [root], embedder, jobs=1)
    assert first.embedded == 5 and len(count_decodes) == 5 + 4  # 4 bad files are tried once
    count_decodes.clear()
    second = index.scan(db, [root], embedder, jobs=1)
    assert count_decodes == []
    assert (second.new, second.changed, second.embedded) == (0, 0, 0)


def test_move_rename_and_copy_reuse_vectors(tmp_path, embedder, count_decodes):
    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    db = open_db()
    index.scan(db, [root], embedder, jobs=1)
    count_decodes.clear()
    (root / "album").mkdir()
    shutil.move(root / "p0.jpg", root / "album" / "renamed.jpg")
    shutil.copy2(root / "p1.jpg", root / "copy.jpg")
    result = index.scan(db, [root], embedder, jobs=1)
    assert count_decodes == [] and result.embedded == 0
    assert result.moved == 1 and result.missing == 0
    paths = {r[0] for r in db.execute("SELECT path FROM files WHERE state = 'ok'")}
    assert str(root / "album" / "renamed.jpg") in paths and str(root / "copy.jpg") in paths


def test_changed_content_is_rehashed_and_vanished_file_kept_as_missing(tmp_path, embedder):
    root = tmp_path / "photos"
    photo(root / "a.jpg", seed=1)
    photo(root / "b.jpg", seed=2)
    db = open_db()
    index.scan(db, [root], embedder, jobs=1)
    old_sha = db.execute("SELECT sha256 FROM files WHERE path = ?", [str(root / "b.jpg")]).fetchone()[0]
    photo(root / "a.jpg", seed=3)  # edited in place
    (root / "b.jpg").unlink()
    result = index.scan(db, [root], embedder, jobs=1)
    assert (result.changed, result.missing, result.embedded) == (1, 1, 1)
    row = db.execute("SELECT state FROM files WHERE sha256 = ?", [old_sha]).fetchone()
    assert row == ("missing",)
    assert db.execute("SELECT count(*) FROM vectors WHERE sha256 = ?", [old_sha]).fetchone()[0] == 1


def test_interrupted_scan_keeps_finished_batches_and_resumes(tmp_path, embedder, monkeypatch):
    root = tmp_path / "photos"
    for i in range(7):
        photo(root / f"p{i}.jpg", seed=i)
    db = open_db()
    monkeypatch.setattr(index, "BATCH", 2)
    real = embedder.embed_images
    calls = []

    def dies_on_second_batch(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(embedder, "embed_images", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        index.scan(db, [root], embedder, jobs=1)
    assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 2
    monkeypatch.setattr(embedder, "embed_images", real)
    resumed = index.scan(db, [root], embedder, jobs=1)
    assert resumed.embedded == 5 and resumed.new == 5 and resumed.unchanged == 2


def test_parallel_scan_gives_the_same_vectors_as_serial(tmp_path, embedder):
    root = tmp_path / "photos"
    for i in range(12):
        photo(root / f"p{i}.jpg", seed=i)
    db = open_db()
    result = index.scan(db, [root], embedder, jobs=2)
    assert result.embedded == 12
    parallel = dict(db.execute("SELECT sha256, vector FROM vectors").fetchall())
    db.execute("DELETE FROM vectors")
    db.execute("DELETE FROM files")
    index.scan(db, [root], embedder, jobs=1)
    assert dict(db.execute("SELECT sha256, vector FROM vectors").fetchall()) == parallel


def test_permission_denied_and_vanished_mid_scan_are_recorded(tmp_path, embedder, monkeypatch):
    root = tmp_path / "photos"
    locked = photo(root / "locked.jpg", seed=1)
    gone = photo(root / "gone.jpg", seed=2)
    photo(root / "fine.jpg", seed=3)
    real_open = os.open

    def fake_open(path, flags, *args):
        if str(path) == str(locked):  # tests run as root, where chmod cannot deny a read
            raise PermissionError(13, "Permission denied")
        if str(path) == str(gone):
            gone.unlink()  # deleted between listing and reading
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", fake_open)
    db = open_db()
    result = index.scan(db, [root], embedder, jobs=1)
    reasons = {r["path"]: r["reason"] for r in index.unreadable(db)}
    assert reasons[str(locked)] == "permission denied"
    assert "vanished" in reasons[str(gone)]
    assert result.embedded == 1


def test_switching_models_reembeds_and_never_mixes(tmp_path, tiny_model, monkeypatch):
    from imgrank.testing.tinymodel import build_model

    root = tmp_path / "photos"
    photo(root / "a.jpg", seed=1)
    assert run("scan", str(root), "--model", str(tiny_model)).exit_code == 0
    other = build_model(tmp_path / "other-model", seed=3)
    result = run("scan", "--model", str(other))
    assert result.exit_code == 0
    assert "embedding model changed" in result.stderr and "embedded 1" in result.stdout
    models = {r[0] for r in open_db().execute("SELECT DISTINCT model FROM vectors")}
    assert len(models) == 2


def test_status_reports_roots_states_and_model(tmp_path, model_env):
    root = tmp_path / "photos"
    photo(root / "a.jpg")
    bad_files(root)
    run("scan", str(root))
    info = json.loads(run("status", "--json").stdout)
    assert info["roots"] == [str(root.resolve())]
    assert info["images"]["ok"] == 1 and info["unreadable"] == 4 and info["embedded"] == 1
    assert info["embedding_model"].startswith(model_env.name)
    assert info["database_bytes"] > 0


def test_scan_without_roots_or_with_a_missing_folder_says_so(tmp_path, model_env):
    result = CliRunner().invoke(cli, ["scan"])
    assert result.exit_code != 0 and "no photo folders" in result.output
    result = CliRunner().invoke(cli, ["scan", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_database_is_private(tmp_path, model_env, home):
    run("scan", str(tmp_path))
    assert oct(os.stat(home / "imgrank.db").st_mode & 0o777) == "0o600"


def test_every_command_has_help_with_an_example():
    import click

    def walk(group, prefix):
        for name, command in group.commands.items():
            yield prefix + [name], command
            if isinstance(command, click.Group):
                yield from walk(command, prefix + [name])

    for args, command in walk(cli, []):
        result = CliRunner().invoke(cli, args + ["--help"])
        assert result.exit_code == 0, args
        if not isinstance(command, click.Group):
            assert "Example" in result.output, f"imgrank {' '.join(args)} --help has no example"


def test_with_a_trained_head_scan_scores_what_is_new_changed_or_renamed(tmp_path, model_env):
    from helpers import activate_random_head

    from imgrank.runs import score_all

    root = tmp_path / "photos"
    photo(root / "a.jpg", seed=1)
    photo(root / "b.jpg", seed=2)
    assert json.loads(run("scan", str(root), "--json").output)["scored"] == 2  # no head: the prior
    activate_random_head()
    photo(root / "c.jpg", seed=3)
    assert json.loads(run("scan", "--json").output)["scored"] == 1  # activating it scored a and b
    assert json.loads(run("scan", "--json").output)["scored"] == 0

    def score_of(name):
        return (
            open_db()
            .execute(
                "SELECT s.score FROM scores s JOIN files f USING (sha256) WHERE f.path = ?",
                [str(root / name)],
            )
            .fetchone()[0]
        )

    before = score_of("a.jpg")
    os.rename(root / "a.jpg", root / "renamed.jpg")
    summary = json.loads(run("scan", "--json").output)
    assert (summary["moved"], summary["embedded"], summary["scored"]) == (1, 0, 1)
    after = score_of("renamed.jpg")
    assert after != before  # the file name is a feature
    score_all(open_db())
    assert score_of("renamed.jpg") == pytest.approx(after)


# --- path helpers (bytes-safe names) ----------------------------------------------------------

NAMES = [
    "/p/plain.jpg",
    "/p/été.jpg",
    os.fsdecode(b"/p/\xff\xfe.jpg"),
    os.fsdecode(b"/p/\xe9t\xe9.jpg"),
    "/p/back\\slash.jpg",
    "/p/\\xff.jpg",  # a real name that looks like an escape
    os.fsdecode(b"/p/\\\xff\\\\x.jpg"),
]


@pytest.mark.parametrize("name", NAMES)
def test_db_path_is_reversible_and_sqlite_safe(name):
    from imgrank.files import db_path, display_name, fs_path

    stored = db_path(name)
    stored.encode("utf-8")  # SQLite (and the tokenizer) can hold it
    assert fs_path(stored) == name
    assert os.fsencode(fs_path(stored)) == os.fsencode(name)
    display_name(name).encode("utf-8")


def test_db_path_is_injective_and_leaves_plain_names_alone():
    from imgrank.files import db_path

    assert len({db_path(n) for n in NAMES}) == len(NAMES)
    assert db_path("/p/plain.jpg") == "/p/plain.jpg"
    assert db_path("/p/été.jpg") == "/p/été.jpg"
    assert db_path(os.fsdecode(b"/p/\xe9t\xe9.jpg")) == "/p/\\xe9t\\xe9.jpg"
    assert db_path(os.fsdecode(b"/p/\xe9t\xe9.jpg")) != db_path("/p/\\xe9t\\xe9.jpg")


def test_under_is_component_wise():
    from imgrank.files import under

    assert under("/a/b/c.jpg", "/a/b") and under("/a/b", "/a/b") and under("/a/b/c", "/a/b/")
    assert not under("/a/bc/d.jpg", "/a/b") and not under("/a", "/a/b")
    assert under("/x.jpg", "/")
    assert under(os.fsdecode(b"/\xff/x.jpg"), os.fsdecode(b"/\xff"))
