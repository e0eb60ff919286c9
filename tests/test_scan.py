"""`imgrank scan` and `imgrank status`: identity, incremental work, bad files, resumption."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from images import bad_files, every_format, forged_jpeg, photo, snapshot, strip_png
from PIL import Image

from imgrank import index, workers
from imgrank.cli import cli
from imgrank.embed import load_embedder
from imgrank.store.db import open_db
from imgrank.store.labels import label_counts


@pytest.fixture
def embedder(tiny_model):
    return load_embedder(str(tiny_model))


@pytest.fixture
def count_decodes(monkeypatch):
    """Count real decodes (scans run with jobs=0, in this process, so the counter sees every one)."""
    calls = []
    real = workers.decode_image

    def counting(data, name="", target=224):
        calls.append(name)
        return real(data, name, target)

    monkeypatch.setattr(workers, "decode_image", counting)
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

    status = run("status")
    assert status.exit_code == 0, status.output
    assert f"unreadable: {len(bad)} (`imgrank status --unreadable` lists them)" in status.stdout
    listing = run("status", "--unreadable")
    assert str(bad["bomb"]) in listing.output and "decompression bomb" in listing.output


def test_rescan_of_unchanged_tree_decodes_nothing(tmp_path, embedder, count_decodes):
    root = tmp_path / "photos"
    for i in range(5):
        photo(root / f"p{i}.jpg", seed=i)
    bad_files(root / "bad")
    db = open_db()
    index.add_roots(db, [root])
    first = index.scan(db, [root], embedder, jobs=0)
    assert first.embedded == 5 and len(count_decodes) == 5 + 4  # 4 bad files are tried once
    count_decodes.clear()
    second = index.scan(db, [root], embedder, jobs=0)
    assert count_decodes == []
    assert (second.new, second.changed, second.embedded) == (0, 0, 0)


def test_move_rename_and_copy_reuse_vectors(tmp_path, embedder, count_decodes):
    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    db = open_db()
    index.scan(db, [root], embedder, jobs=0)
    count_decodes.clear()
    (root / "album").mkdir()
    shutil.move(root / "p0.jpg", root / "album" / "renamed.jpg")
    shutil.copy2(root / "p1.jpg", root / "copy.jpg")
    result = index.scan(db, [root], embedder, jobs=0)
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
    monkeypatch.setattr(index.pipeline, "BATCH", 2)
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
    result = index.scan(db, [root], embedder, jobs=0)  # read in this process, where os.open is patched
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
    assert "embedding model changed" in result.stderr and "1 embedded" in result.stdout
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
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception


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


# --- names that are not UTF-8 ------------------------------------------------------------------


def bytes_names(root) -> list[str]:
    """Photos named `\xff\xfe.jpg` and Latin-1 `\xe9t\xe9.jpg` among ordinary ones (as str paths)."""
    broot = os.fsencode(root)
    os.makedirs(broot, exist_ok=True)
    out = []
    for i, name in enumerate([b"\xff\xfe.jpg", b"\xe9t\xe9.jpg", b"plain.jpg", b"caf\xc3\xa9.jpg"]):
        path = os.path.join(broot, name)
        photo(Path(os.fsdecode(path)), seed=40 + i)
        out.append(os.fsdecode(path))
    return out


def test_names_that_are_not_utf8_are_scanned_and_labelled(tmp_path, model_env):
    root = tmp_path / "photos"
    paths = bytes_names(root)
    result = run("scan", str(root), "--json", "--jobs", "2")
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(result.stdout)["new"] == 4 and json.loads(result.stdout)["embedded"] == 4
    db = open_db()
    assert sorted(index.rows(db)) == sorted(paths)  # the same bytes come back out of the store
    assert not index.needs_work(db, paths)
    # The tokenizer got the lossy display form; one vector per name.
    names = {r[0] for r in db.execute("SELECT name FROM name_vectors")}
    assert "\ufffd\ufffd.jpg" in names and "\ufffdt\ufffd.jpg" in names and "café.jpg" in names

    again = run("scan", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["unchanged"] == 4

    relabel = CliRunner().invoke(cli, ["relabel", "delete", paths[0], paths[1]])
    assert relabel.exit_code == 0 and relabel.exception is None, relabel.output
    assert "2 photos (2 changed" in relabel.stdout
    listing = CliRunner().invoke(cli, ["labels"])
    assert listing.exit_code == 0 and listing.exception is None
    assert "\ufffd\ufffd.jpg" in listing.stdout
    status = CliRunner().invoke(cli, ["status"])
    assert status.exit_code == 0 and status.exception is None
    # Stdin carries bytes: the same names piped in (CRLF endings) reach the same files.
    piped = CliRunner().invoke(
        cli, ["relabel", "keep", "-"], input=b"".join(os.fsencode(p) + b"\r\n" for p in paths)
    )
    assert piped.exit_code == 0 and piped.exception is None, piped.output
    assert "4 photos (4 changed" in piped.stdout


def test_a_moved_file_with_a_bad_name_keeps_its_row_facts(tmp_path, model_env):
    root = tmp_path / "photos"
    paths = bytes_names(root)
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    dst = os.fsdecode(os.path.join(os.fsencode(root), b"moved-\xff.jpg"))
    os.rename(paths[0], dst)
    result = run("scan", "--json", "--jobs", "1")
    assert result.exit_code == 0 and json.loads(result.stdout)["moved"] == 1
    row = index.rows(open_db(), [dst])[dst]
    assert row.state == "ok" and (row.width, row.height) == (320, 240)


# --- hostile files and bounded memory ----------------------------------------------------------


def test_hostile_headers_are_refused_quickly_with_a_reason(tmp_path, model_env):
    import time

    root = tmp_path / "photos"
    hostile = {
        "strip": strip_png(root / "strip.png", 1, 20_000),
        "long_strip": strip_png(root / "long.png", 1, 65_535),
        "forged": forged_jpeg(root / "forged.jpg", 60_000, 60_000),
    }
    assert os.path.getsize(hostile["strip"]) < 200 and os.path.getsize(hostile["long_strip"]) < 400
    photo(root / "fine.jpg", seed=1)
    start = time.monotonic()
    result = run("scan", str(root), "--json", "--jobs", "2")
    assert result.exit_code == 0 and result.exception is None, result.output
    assert time.monotonic() - start < 30
    summary = json.loads(result.stdout)
    assert summary["unreadable"] == 3 and summary["embedded"] == 1
    reasons = {r["path"]: r["reason"] for r in index.unreadable(open_db())}
    assert "MB to decode" in reasons[str(hostile["strip"])]
    assert "MB to decode" in reasons[str(hostile["long_strip"])]
    assert "forged or truncated header" in reasons[str(hostile["forged"])]


def _descendants(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out.append(int(child))
        try:
            out += _descendants(int(child))
        except OSError:
            pass
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def oom_killer(limit_mb: float = 150):
    """A stand-in for the OOM killer: SIGKILLs any process under this one above `limit_mb` (the
    decoding workers). Yields the list of pids it killed."""
    killed: list[int] = []
    stop = threading.Event()
    own = Path("/proc/self/cmdline").read_bytes()

    def watch():
        while not stop.is_set():
            for pid in _descendants(os.getpid()):
                try:
                    # A copy of this process between fork and exec (the fork server starting) shows
                    # this process's memory: leave it, the real OOM killer would not pick it. The
                    # command line first: read after the memory, it could be the exec'd server's.
                    if Path(f"/proc/{pid}/cmdline").read_bytes() != own and _rss_mb(pid) > limit_mb:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                except OSError:
                    pass
            stop.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("jobs", ["2", "1"])
def test_a_decoding_worker_killed_by_the_oom_killer_is_recorded_and_the_scan_goes_on(
    tmp_path, model_env, jobs
):
    """The OOM killer (a stand-in) kills the worker decoding the 64-megapixel PNG, every time it is
    tried. The scan records that file and finishes. With --jobs 1 too: one job is one worker, not
    a decode in the scan's own process (which the OOM killer would take down with everything)."""
    root = tmp_path / "photos"
    for i in range(12):
        photo(root / f"p{i:02d}.jpg", seed=i)
    Image.new("RGB", (8000, 8000), "teal").save(root / "huge.png")  # ~200 KB, 192 MB decoded
    with oom_killer() as killed:
        result = run("scan", str(root), "--json", "--jobs", jobs)
    assert result.exit_code == 0 and result.exception is None, result.output
    assert len(killed) >= 2  # in the pool, then alone
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 12 and summary["unreadable"] == 1
    reasons = {r["path"]: r["reason"] for r in index.unreadable(open_db())}
    assert "died" in reasons[str(root / "huge.png")]
    # A dead process is not the file's own fault (the machine may have been short of memory): it
    # is listed as imgrank's failure, and the next scan tries the file again; the others are not read.
    assert [r["cause"] for r in index.unreadable(open_db())] == ["imgrank"]
    with oom_killer() as killed:
        again = run("scan", str(root), "--json", "--jobs", jobs)
    assert again.exit_code == 0 and again.exception is None, again.output
    assert killed and json.loads(again.stdout)["unchanged"] == 12, again.stdout
    assert json.loads(again.stdout)["unreadable"] == 1


def test_a_few_files_indexed_by_relabel_are_decoded_in_a_worker_too(tmp_path, model_env):
    """relabel and the daemon index a few files at a time (index_paths): in a worker all the same."""
    fine = photo(tmp_path / "fine.jpg", seed=1)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 8000), "teal").save(huge)
    with oom_killer() as killed:
        result = run("relabel", "delete", str(fine), str(huge))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert killed and "died" in result.output
    assert label_counts(open_db())["by_label"]["delete"] == 1


def test_workers_run_under_a_memory_limit(tmp_path):
    """A worker's address space is capped: a runaway allocation fails there, not on the machine."""
    import resource
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from imgrank import workers

    with ProcessPoolExecutor(1, mp_context=get_context("forkserver"), initializer=workers.init_worker,
                             initargs=(set(), True)) as pool:  # fmt: skip
        soft = pool.submit(resource.getrlimit, resource.RLIMIT_AS).result()[0]
        assert soft != resource.RLIM_INFINITY and soft < 16 << 30
        assert pool.submit(_allocate, 20 << 30).result() == "MemoryError"


def _allocate(n: int) -> str:
    try:
        bytearray(n)
    except MemoryError:
        return "MemoryError"
    return "allocated"


def test_walking_never_runs_ahead_of_decoding(tmp_path, monkeypatch):
    """A bounded number of files is in flight, whatever the folder's size."""
    from imgrank import workers

    for i in range(40):
        photo(tmp_path / f"p{i:02d}.jpg", seed=i, size=(40, 30))
    taken = []

    def paths():
        for p in sorted(tmp_path.glob("*.jpg")):
            taken.append(p)
            yield str(p)

    results = workers.read_all(paths(), set(), 2)
    first = next(results)
    assert first["array"] is not None
    assert len(taken) <= 2 * workers.IN_FLIGHT_PER_WORKER + 1
    assert len([first, *results]) == 40


# --- roots --------------------------------------------------------------------------------------


def test_empty_and_non_folder_roots_are_refused_in_one_line(tmp_path, model_env):
    for bad in ["", str(tmp_path / "nothing-here"), str(photo(tmp_path / "a.jpg"))]:
        result = CliRunner().invoke(cli, ["scan", bad])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception
        assert len(result.output.strip().splitlines()) == 1
    assert index.list_roots(open_db()) == []


def test_roots_list_and_remove(tmp_path, model_env):
    a, b = tmp_path / "a", tmp_path / "b"
    photo(a / "one.jpg", seed=1)
    photo(b / "two.jpg", seed=2)
    assert run("scan", str(a), str(b)).exit_code == 0
    listed = CliRunner().invoke(cli, ["roots", "list"])
    assert listed.exit_code == 0 and listed.stdout.split() == [str(a), str(b)]
    assert CliRunner().invoke(cli, ["relabel", "delete", str(a / "one.jpg")]).exit_code == 0

    removed = CliRunner().invoke(cli, ["roots", "remove", str(a)])
    assert removed.exit_code == 0 and removed.exception is None, removed.output
    assert CliRunner().invoke(cli, ["roots", "list"]).stdout.split() == [str(b)]
    db = open_db()
    assert db.execute("SELECT count(*) FROM files WHERE root_id IS NOT NULL").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 2  # kept
    assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 1  # kept
    scan = run("scan", "--json")  # the removed folder is no longer scanned or marked missing
    assert scan.exit_code == 0 and json.loads(scan.stdout)["missing"] == 0

    again = run("scan", str(a), "--json")  # adding it back re-embeds nothing
    assert again.exit_code == 0 and json.loads(again.stdout)["embedded"] == 0
    assert db.execute("SELECT count(*) FROM files WHERE root_id IS NOT NULL").fetchone()[0] == 2

    unknown = CliRunner().invoke(cli, ["roots", "remove", str(tmp_path / "c")])
    assert unknown.exit_code == 1 and "is not a root" in unknown.output


def test_a_directory_symlink_inside_a_root_is_not_followed(tmp_path, model_env):
    outside = tmp_path / "outside"
    photo(outside / "secret.jpg", seed=5)
    root = tmp_path / "photos"
    photo(root / "mine.jpg", seed=6)
    os.symlink(outside, root / "link")
    result = run("scan", str(root), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["new"] == 1
    assert list(index.rows(open_db())) == [str(root / "mine.jpg")]


# --- scans side by side, folders that cannot be listed --------------------------------------------


def test_two_scans_started_together_embed_each_photo_once(tmp_path, tiny_model):
    import subprocess
    import sys

    root = tmp_path / "photos"
    for i in range(30):
        photo(root / f"p{i:02d}.jpg", seed=i)
    env = {**os.environ, "IMGRANK_MODEL": str(tiny_model)}
    cmd = [sys.executable, "-m", "imgrank", "scan", str(root), "--json", "--jobs", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    embedded = sorted(json.loads(out)["embedded"] for out, _ in outs)
    assert embedded == [0, 30]
    assert any(b"waiting for the other scan" in err for _, err in outs)


HOLD_SCAN_LOCK = """
import sys
from imgrank.index import scan_lock
with scan_lock():
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def test_relabel_waits_for_a_scan_in_another_process_before_indexing(tmp_path, tiny_model):
    """index_paths (relabel, the daemon) takes the scan lock: while another process holds it (a scan
    reading the same photos), a relabel that must index a photo waits, then finds its work done."""
    import subprocess
    import sys

    new = photo(tmp_path / "new.jpg", seed=1)
    env = {**os.environ, "IMGRANK_MODEL": str(tiny_model)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCAN_LOCK], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    errors = tmp_path / "relabel.err"
    relabel = None
    try:
        assert holder.stdout.readline() == b"held\n"
        cmd = [sys.executable, "-m", "imgrank", "relabel", "keep", str(new), "--json"]
        relabel = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errors.open("wb"))
        deadline = time.monotonic() + 120
        while b"waiting for the other scan" not in errors.read_bytes():
            assert relabel.poll() is None, f"relabel did not wait: {errors.read_text()}"
            assert time.monotonic() < deadline, "relabel neither waited nor finished"
            time.sleep(0.05)
        assert index.rows(open_db(), [str(new)]) == {}  # nothing indexed while the lock is held
        holder.stdin.close()
        out, _ = relabel.communicate(timeout=300)
        assert relabel.returncode == 0, errors.read_text()
        assert json.loads(out)["applied"] == 1 and index.rows(open_db(), [str(new)])[str(new)].state == "ok"
    finally:
        for proc in (holder, relabel):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_folder_that_cannot_be_listed_is_reported_not_marked_missing(tmp_path, model_env, monkeypatch):
    root = tmp_path / "photos"
    photo(root / "open" / "a.jpg", seed=1)
    photo(root / "closed" / "b.jpg", seed=2)
    assert run("scan", str(root)).exit_code == 0
    real = os.scandir

    def scandir(path):  # tests run as root, where chmod 000 cannot deny a listing
        if str(path) == str(root / "closed"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run("scan", "--json")
    assert result.exit_code == 0
    assert f"cannot list {root / 'closed'} (Permission denied)" in result.stderr
    assert json.loads(result.stdout)["missing"] == 0


# --- facts that follow the content --------------------------------------------------------------


def test_copies_keep_the_contents_facts_and_features(tmp_path, model_env):
    from imgrank.head_inputs import load_parts
    from imgrank.store.vectors import current_model_id

    root = tmp_path / "photos"
    originals = [photo(root / f"IMG_{i}.jpg", seed=i) for i in range(4)]
    assert run("scan", str(root)).exit_code == 0
    assert CliRunner().invoke(cli, ["relabel", "keep", *map(str, originals[:2])]).exit_code == 0
    db = open_db()
    model_id = current_model_id(db)
    before = load_parts(db, model_id)
    for p in originals[:2]:
        shutil.copy(p, root / f"zz copy of {p.name}")
    (root / "moved").mkdir()
    shutil.move(originals[3], root / "moved" / "renamed.jpg")
    assert run("scan", "--json").exit_code == 0
    assert db.execute("SELECT count(*) FROM files WHERE width IS NULL OR height IS NULL").fetchone()[0] == 0
    after = load_parts(db, model_id)
    order = [after["sha256"].index(s) for s in before["sha256"]]
    assert np.array_equal(after["meta"][order], before["meta"])
    moved = before["path"].index(str(originals[3]))
    same_name = [i for i in range(4) if i != moved]
    assert np.array_equal(after["name"][order][same_name], before["name"][same_name])
    firsts = [before["path"].index(str(p)) for p in originals[:2]]
    assert [after["path"][order[i]] for i in firsts] == [str(p) for p in originals[:2]]


def test_files_under_a_folder_are_matched_exactly_not_by_ascii_case_or_wildcards(tmp_path, model_env):
    root = tmp_path / "photos"
    for folder in ("Trip_1", "trip_1", "TripX1"):
        photo(root / folder / "a.jpg", seed=len(folder) + ord(folder[0]))
    assert CliRunner().invoke(cli, ["scan", str(root)]).exit_code == 0
    assert index.present_under(open_db(), root / "Trip_1") == [str(root / "Trip_1" / "a.jpg")]
