"""`imgrank order` and `imgrank restore`: score order in a real viewer, nothing lost, no loops."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import can_mount_read_only
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import photo

from imgrank import index
from imgrank import order as order_mod
from imgrank.cli import cli
from imgrank.order import order, ranked, restore
from imgrank.store.db import open_db

DAY = 86_400 * 10**9
PAST = 1_600_000_000 * 10**9  # 2020-09-13: every original time in these tests is older than now


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def times(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns


def scored_folder(db, root: Path, scores: list[float], mtimes: list[int] | None = None) -> list[Path]:
    """Real files under a registered root, indexed and scored as a scan and `score` would leave them.

    The index rows are written directly so hundreds of hypothesis examples stay fast; the files,
    their times and everything `order` and `restore` do are real.
    """
    root.mkdir(parents=True, exist_ok=True)
    index.add_roots(db, [root])
    root_id = db.execute("SELECT id FROM roots WHERE path = ?", [str(root.resolve())]).fetchone()[0]
    paths = []
    with db.atomic():
        for i, score in enumerate(scores):
            p = root.resolve() / f"img{i:03d}.jpg"
            p.write_bytes(b"photo %d" % i)
            mtime = mtimes[i] if mtimes else PAST - i * DAY - i * 7919
            os.utime(p, ns=(PAST + i * 13, mtime))  # distinct atimes, to see they stay
            st = p.stat()
            sha = f"{root.name}:{i}"
            db.execute(
                "INSERT INTO files (path, root_id, size, mtime_ns, sha256, state) "
                "VALUES (?, ?, ?, ?, ?, 'ok')",
                [str(p), root_id, st.st_size, st.st_mtime_ns, sha],
            )
            db.execute("REPLACE INTO scores (sha256, run_id, score, at) VALUES (?, 1, ?, 0)", [sha, score])
            paths.append(p)
    return paths


def by_mtime(paths: list[Path], newest_first: bool = True) -> list[str]:
    return [str(p) for p in sorted(paths, key=lambda p: os.lstat(p).st_mtime_ns, reverse=newest_first)]


def in_step(db, paths: list[Path]) -> bool:
    """Would a scan take every file as unchanged (no read)?"""
    return not index.needs_work(db, [str(p) for p in paths])


scores_st = st.lists(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]) | st.floats(0, 1), min_size=1, max_size=25
)
mtimes_st = st.integers(min_value=10**9, max_value=PAST)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scores=scores_st,
    data=st.data(),
    step=st.sampled_from([2.0, 1.0, 0.5, 60.0]),
    oldest_first=st.booleans(),
)
def test_order_then_restore_is_the_identity(scores, data, step, oldest_first):
    mtimes = data.draw(st.lists(mtimes_st, min_size=len(scores), max_size=len(scores)))
    top = data.draw(st.none() | st.integers(1, len(scores)))
    rounds = data.draw(st.integers(1, 3))  # orders in a row (scores change between them)
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "imgrank.db")
        paths = scored_folder(db, Path(tmp) / "photos", scores, mtimes)
        before = {p: times(p) for p in paths}
        for r in range(rounds):
            result = order(db, step=step, top=top, oldest_first=oldest_first)
            assert not result.failed
            assert all(times(p)[0] == before[p][0] for p in paths)  # access times untouched
            assert in_step(db, paths)
            db.execute("UPDATE scores SET score = 1 - score WHERE sha256 = ?", [f"photos:{r % len(scores)}"])
        back = restore(db)
        assert not back.failed
        assert {p: times(p) for p in paths} == before
        assert db.execute("SELECT count(*) FROM mtimes").fetchone()[0] == 0
        assert in_step(db, paths)


@settings(max_examples=60, deadline=None)
@given(scores=scores_st, data=st.data(), step=st.sampled_from([2.0, 1.0, 0.5]), oldest_first=st.booleans())
def test_the_order_matches_the_scores(scores, data, step, oldest_first):
    top = data.draw(st.none() | st.integers(1, len(scores)))
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "imgrank.db")
        paths = scored_folder(db, Path(tmp) / "photos", scores)
        now = time.time_ns()
        order(db, step=step, top=top, oldest_first=oldest_first)
        want = [r.path for r in ranked(db)]
        n = len(want) if top is None else top
        got = by_mtime(paths, newest_first=not oldest_first)
        assert got[:n] == want[:n]  # the least-wanted first, in score order
        set_times = sorted(os.lstat(p).st_mtime_ns for p in want[:n])
        step_ns = round(step * 1e9)
        assert all(b - a == step_ns for a, b in zip(set_times, set_times[1:], strict=False))  # evenly spaced
        assert all(t % step_ns == 0 for t in set_times)  # on whole steps (FAT keeps 2 s)
        assert set_times[-1] <= time.time_ns()  # never in the future
        if top is None and not oldest_first:
            assert set_times[-1] >= now - step_ns  # ending at now
        if top is not None:  # the rest keep their own times
            assert all(
                os.lstat(p).st_mtime_ns == PAST - i * DAY - i * 7919
                for i, p in enumerate(paths)
                if str(p) not in want[:n]
            )


def test_scan_sees_no_change_after_order_or_restore(tmp_path, model_env, monkeypatch):
    root = tmp_path / "photos"
    for i in range(6):
        photo(root / f"p{i}.jpg", seed=i)
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    db = open_db()
    with db.atomic():
        for i, (sha,) in enumerate(db.execute("SELECT sha256 FROM files ORDER BY path").fetchall()):
            db.execute("REPLACE INTO scores (sha256, run_id, score, at) VALUES (?, 1, ?, 0)", [sha, i / 10])
    reads = []  # the files a scan reads (in its decoding workers)
    real = index.pipeline._results
    monkeypatch.setattr(index.pipeline, "_results", lambda paths, *a: reads.extend(paths) or real(paths, *a))
    for command in (
        ["order"],
        ["scan", "--json", "--jobs", "1"],
        ["restore"],
        ["scan", "--json", "--jobs", "1"],
    ):
        result = run(*command)
        assert result.exit_code == 0, result.output
        if command[0] == "scan":
            assert json.loads(result.output)["unchanged"] == 6
    assert reads == []


def test_a_photo_read_while_it_has_an_imgrank_time_is_indexed_with_its_own(tmp_path, tiny_model, monkeypatch):
    """A file read while ordered (here: re-embedded for another model) keeps its original in its
    row, so after `restore` it is still as indexed: nothing is read again (before, every file
    re-embedded after an order was read once more after a restore, and a relabel racing an order
    and a restore failed its photos as "could not be indexed")."""
    from imgrank.testing.tinymodel import build_model

    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    monkeypatch.setenv("IMGRANK_MODEL", str(tiny_model))
    assert run("scan", str(root)).exit_code == 0  # scored by the prior
    assert run("order").exit_code == 0
    other = str(build_model(tmp_path / "other-model", seed=3))
    assert json.loads(run("scan", "--model", other, "--json").stdout)["embedded"] == 3  # read while ordered
    assert run("restore").exit_code == 0
    reads = []  # the files a scan reads
    real = index.pipeline._results
    monkeypatch.setattr(index.pipeline, "_results", lambda paths, *a: reads.extend(paths) or real(paths, *a))
    assert json.loads(run("scan", "--model", other, "--json").stdout)["unchanged"] == 3
    assert reads == []
    assert index.needs_work(open_db(), [str(p) for p in root.iterdir()]) == set()


def test_a_photo_read_just_before_a_restore_is_indexed_with_its_own(tmp_path, tiny_model, monkeypatch):
    """A restore in another process can finish between a scan's read of an ordered photo and the
    scan's write of its row: the time read is then no longer recorded, yet it was imgrank's. The
    row keeps the original all the same, so the photo is not read again (it was, and a relabel
    that wanted a current row failed such photos in tests/test_concurrency.py)."""
    from imgrank.testing.tinymodel import build_model

    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    originals = {str(p): os.lstat(p).st_mtime_ns for p in root.iterdir()}
    monkeypatch.setenv("IMGRANK_MODEL", str(tiny_model))
    assert run("scan", str(root)).exit_code == 0  # scored by the prior
    assert run("order").exit_code == 0
    assert all(os.lstat(p).st_mtime_ns != t for p, t in originals.items())
    real = index.pipeline._results

    def restored_after_reading(paths, *args):
        read = list(real(paths, *args))
        assert restore(open_db()).restored == 3  # another process's restore, between read and write
        return iter(read)

    monkeypatch.setattr(index.pipeline, "_results", restored_after_reading)
    other = str(build_model(tmp_path / "other-model", seed=3))
    assert json.loads(run("scan", "--model", other, "--json").stdout)["embedded"] == 3
    assert {p: os.lstat(p).st_mtime_ns for p in originals} == originals
    assert index.needs_work(open_db(), list(originals)) == set()


def test_the_original_time_follows_a_moved_photo(tmp_path, model_env):
    """Renamed after ordering, seen by a scan (by content) or by the daemon (as a move event)."""
    root = tmp_path / "photos"
    paths = [photo(root / f"p{i}.jpg", seed=i) for i in range(3)]
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    db = open_db()
    db.execute("REPLACE INTO scores (sha256, run_id, score, at) SELECT sha256, 1, 0.5, 0 FROM files")
    before = {p.name: times(p) for p in paths}
    order(db)
    os.rename(paths[0], root / "renamed.jpg")
    (root / "sub").mkdir()
    os.rename(paths[1], root / "sub" / "moved.jpg")
    result = json.loads(run("scan", "--json", "--jobs", "1").output)
    assert (result["moved"], result["embedded"]) == (2, 0)
    os.rename(paths[2], root / "watched.jpg")
    index.move_path(db, paths[2], root / "watched.jpg")
    assert restore(db).failed == []
    assert times(root / "renamed.jpg") == before["p0.jpg"]  # atimes too: scans read with O_NOATIME
    assert times(root / "sub" / "moved.jpg") == before["p1.jpg"]
    assert times(root / "watched.jpg") == before["p2.jpg"]
    assert json.loads(run("scan", "--json", "--jobs", "1").output)["unchanged"] == 3


@settings(max_examples=300, deadline=None)
@given(
    current=st.lists(st.none() | st.integers(0, 200), max_size=30),
    step=st.sampled_from([2, 1, 3, 10, 60]),
    gap=st.sampled_from([None, 1, 2]),
    end=st.integers(100, 300),
)
def test_places_keep_what_is_in_order_and_stay_a_gap_apart(current, step, gap, end):
    gap = min(gap or step, step)
    t = order_mod._targets(current, step, end, gap)  # in whole seconds: any unit will do
    assert len(t) == len(current)
    assert all(x <= end for x in t)  # never after the end ("now")
    assert all(a - b >= gap for a, b in zip(t, t[1:], strict=False))  # newest first, a gap apart
    fresh = order_mod._targets([None] * len(current), step, end, gap)
    assert fresh == [end - i * step for i in range(len(current))]
    assert order_mod._targets(fresh, step, end + 100, gap) == fresh  # all in order: nothing moves
    if len(fresh) > 2:
        gone = fresh[:1] + fresh[2:]  # a deletion moves nothing
        assert order_mod._targets(gone, step, end, gap) == gone
        moved = fresh[:1] + fresh[2:] + fresh[1:2]  # place 1's file now belongs last: it alone moves
        again = order_mod._targets(moved, step, end, gap)
        assert sum(a != b for a, b in zip(again, moved, strict=True)) == 1
        arrived = fresh[:1] + [None] + fresh[1:]  # a new file between the first two
        again = order_mod._targets(arrived, step, end + step, gap)  # a step later
        touched = sum(a != b for a, b in zip(again, arrived, strict=True))
        assert touched == 1 if step >= 2 * gap else touched <= 2  # slides in, or the top moves up


def test_a_reorder_keeping_places_touches_only_the_photos_that_must_move(tmp_path):
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [i / 40 for i in range(40)])
    a_minute_ago = time.time_ns() - 60 * 10**9
    assert order(db, now_ns=a_minute_ago, keep_places=True).touched == 40

    def reorder(now_ns=None):
        result = order(db, now_ns=now_ns, keep_places=True)
        present = [p for p in paths + more if p.exists()]
        assert by_mtime(present) == [r.path for r in ranked(db)]
        assert in_step(db, present) and not result.failed
        return result.touched

    more = []
    paths[5].unlink()
    index.mark_missing(db, paths[5])
    assert reorder(a_minute_ago) == 0  # a deletion moves nothing
    more = scored_folder(db, tmp_path / "more", [0.995])
    assert reorder() == 1  # a new least-wanted photo goes on top
    db.execute("UPDATE scores SET score = 0.9 WHERE sha256 = 'photos:30'")  # up a few places
    assert reorder() <= 6  # those it passes (or fewer)
    db.execute("UPDATE scores SET score = 0.26 WHERE sha256 = 'photos:3'")  # low to the middle
    assert reorder() <= 20  # the shorter side of the change, at most
    order(db)  # without keep_places every time is laid out anew: evenly, ending at now
    t = sorted((os.lstat(p).st_mtime_ns for p in paths + more if p.exists()), reverse=True)
    assert [a - b for a, b in zip(t, t[1:], strict=False)] == [2 * 10**9] * 39
    assert json.loads(run("order", "--keep-places", "--json").output)["touched"] == 0
    back = restore(db)
    assert back.restored == 40 and not back.failed

    # Laid out 10 s apart (as the daemon does), a photo slides in between two others.
    assert order(db, step=10, now_ns=a_minute_ago, keep_places=True).touched == 40
    for score in (0.5, 0.2, 0.9, 0.501):
        more += scored_folder(db, tmp_path / f"more{score}", [score])
        assert order(db, step=10, keep_places=True).touched == 1
        assert by_mtime([p for p in paths + more if p.exists()]) == [r.path for r in ranked(db)]


def test_a_crash_between_the_database_write_and_the_touches_loses_nothing(tmp_path):
    """A real `kill -9` in the middle of the touches, after the first order and during a second one."""
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [i / 20 for i in range(20)])
    before = {p: times(p) for p in paths}

    def order_killed_after(k: int) -> None:
        script = (
            "import os, signal; from imgrank import order as o; from imgrank.store import owntimes as t\n"
            "from imgrank.store.db import open_db\n"
            "real, n = t.Toucher.touch, [0]\n"
            "def touch(*a, **k):\n"
            f"    n[0] += 1\n    if n[0] > {k}: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return real(*a, **k)\n"
            "t.Toucher.touch = touch\n"
            "o.order(open_db())\n"
        )
        proc = subprocess.run([sys.executable, "-c", script], env=os.environ, capture_output=True)
        assert proc.returncode == -9, proc.stderr

    order_killed_after(7)  # the first order dies: 7 files touched, 13 recorded but not touched
    assert restore(db).failed == []
    assert {p: times(p) for p in paths} == before

    order_killed_after(5)
    order(db)  # rerun to the end, then change the scores and die in the middle of the next order
    db.execute("UPDATE scores SET score = 1 - score")
    order_killed_after(9)
    order(db)  # rerunning `order` is correct...
    assert by_mtime(paths) == [r.path for r in ranked(db)]
    assert in_step(db, paths)
    db.execute("UPDATE scores SET score = 1 - score")
    order_killed_after(3)
    back = restore(db)  # ...and so is `restore` straight after a crash
    assert back.failed == []
    assert {p: times(p) for p in paths} == before
    assert in_step(db, paths)


def test_edits_after_ordering_become_the_original(tmp_path):
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [0.9, 0.5, 0.1])
    before = {p: times(p) for p in paths}
    assert run("order").exit_code == 0
    touched, edited = paths[0], paths[1]
    os.utime(touched, ns=(before[touched][0], PAST + 5 * DAY))  # someone set its time
    edited.write_bytes(b"edited in an editor")  # someone changed its content: mtime is now

    result = run("restore")
    assert result.exit_code == 1
    assert f"{touched}: changed since imgrank ordered it" in result.output
    assert f"{edited}: changed since imgrank ordered it" in result.output
    assert times(paths[2]) == before[paths[2]]
    assert os.lstat(touched).st_mtime_ns == PAST + 5 * DAY  # left alone

    # A later order takes the owner's time as the original; a restore gives that back.
    edited_mtime = os.lstat(edited).st_mtime_ns
    assert run("order").exit_code == 0
    assert run("restore").exit_code == 0
    assert os.lstat(touched).st_mtime_ns == PAST + 5 * DAY
    assert os.lstat(edited).st_mtime_ns == edited_mtime
    assert db.execute("SELECT count(*) FROM mtimes").fetchone()[0] == 0


def test_restore_force_puts_back_a_time_someone_changed(tmp_path):
    db = open_db()
    (path,) = scored_folder(db, tmp_path / "photos", [0.5])
    before = times(path)
    order(db)
    os.utime(path, ns=(before[0], PAST + DAY))
    assert run("restore").exit_code == 1
    assert run("restore", "--force").exit_code == 0
    assert times(path) == before


def test_a_photo_deleted_since_the_last_scan_is_one_message_and_not_a_failure(tmp_path):
    """Issue 21: every `order` exited 1 once a photo was deleted, worded two ways."""
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [0.9, 0.8, 0.7, 0.1])
    gone = paths[1]
    gone.unlink()
    result = CliRunner().invoke(cli, ["order"])
    assert result.exit_code == 0, result.output
    said = f"1 photo deleted since the last scan (not ordered; `imgrank scan` forgets them): {gone}"
    assert said in result.output
    assert "vanished" not in result.output and "No such file" not in result.output
    assert "ordered 4 photos: 3 mtimes set, 1 skipped" in result.output
    assert by_mtime([p for p in paths if p != gone]) == [str(p) for p in paths if p != gone]
    assert db.execute("SELECT count(*) FROM mtimes").fetchone()[0] == 3
    # A restore gives back the rest (the deleted file was never recorded: nothing to keep).
    result = run("restore", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) | {"seconds": 0} == {
        "restored": 3,
        "already": 0,
        "followed": 0,
        "missing": [],
        "gone": [],
        "forgotten": 0,
        "failed": [],
        "seconds": 0,
    }


def test_a_read_only_mount_is_reported_and_the_rest_are_ordered(tmp_path):
    """A real read-only bind mount, in a private mount namespace, over one folder of the root."""
    db = open_db()
    root = tmp_path / "photos"
    paths = scored_folder(db, root, [0.9, 0.6, 0.3])
    ro = root / "ro"
    ro.mkdir()
    moved = ro / paths[1].name
    paths[1].rename(moved)
    db.execute("UPDATE files SET path = ? WHERE path = ?", [str(moved), str(paths[1])])
    paths[1] = moved
    before = {p: times(p) for p in paths}
    if not can_mount_read_only(ro):
        pytest.skip("no user namespaces here for a read-only bind mount")
    imgrank = [sys.executable, "-m", "imgrank"]
    shell = f'mount --bind {ro} {ro} && mount -o remount,ro,bind {ro} && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, "sh", *imgrank, "order"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert proc.returncode == 1
    assert f"{moved}: Read-only file system" in proc.stderr
    assert "ordered 3 photos: 2 mtimes set" in proc.stdout
    assert times(moved) == before[moved]
    assert [r[0] for r in db.execute("SELECT path FROM mtimes ORDER BY path")] == sorted(
        str(p) for p in (paths[0], paths[2])
    )
    assert in_step(db, paths)
    assert run("restore").exit_code == 0
    assert {p: times(p) for p in paths} == before


def test_top_n_touches_only_the_least_wanted_and_gives_the_rest_back(tmp_path):
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [0.9, 0.8, 0.7, 0.6, 0.5])
    before = {p: times(p) for p in paths}
    order(db)
    result = order(db, top=2)
    assert (result.ordered, result.restored) == (2, 3)
    assert [times(p) for p in paths[2:]] == [before[p] for p in paths[2:]]
    assert by_mtime(paths)[:2] == [str(paths[0]), str(paths[1])]
    assert db.execute("SELECT count(*) FROM mtimes").fetchone()[0] == 2


def test_dry_run_changes_nothing(tmp_path):
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [0.2, 0.7])
    before = {p: times(p) for p in paths}
    result = run("order", "--dry-run")
    assert result.exit_code == 0
    assert "dry run: would set 2 of 2 mtimes" in result.output
    assert result.output.index(str(paths[1])) < result.output.index(str(paths[0]))
    assert {p: times(p) for p in paths} == before
    assert db.execute("SELECT count(*) FROM mtimes").fetchone()[0] == 0


def test_restore_under_a_path_restores_only_there(tmp_path):
    db = open_db()
    a = scored_folder(db, tmp_path / "photos" / "a", [0.1, 0.2])
    b = scored_folder(db, tmp_path / "photos" / "a-b", [0.3])  # a sibling whose name starts the same
    before = {p: times(p) for p in a + b}
    order(db)
    result = run("restore", str(tmp_path / "photos" / "a"))
    assert result.exit_code == 0
    assert [times(p) for p in a] == [before[p] for p in a]
    assert times(b[0]) != before[b[0]]


def records(db) -> list[str]:
    return [r[0] for r in db.execute("SELECT path FROM mtimes ORDER BY path")]


def test_restore_keeps_the_records_of_missing_files_until_told_to_forget_them(tmp_path):
    """A deleted file and a folder whose disk is gone: nothing proves their originals obsolete."""
    db = open_db()
    kept = scored_folder(db, tmp_path / "photos", [0.5, 0.4])
    away = scored_folder(db, tmp_path / "disk", [0.3])
    order(db)
    kept[0].unlink()
    shutil.move(tmp_path / "disk", tmp_path / "unplugged")
    result = restore(db)
    assert (result.restored, result.missing, result.failed) == (1, sorted([str(kept[0]), str(away[0])]), [])
    assert records(db) == sorted([str(kept[0]), str(away[0])])
    cli = run("restore")
    assert cli.exit_code == 0 and "2 not found under the roots" in cli.output and str(away[0]) in cli.output
    # The disk comes back: its original time is there to give back.
    before = os.lstat(tmp_path / "unplugged" / away[0].name).st_mtime_ns
    shutil.move(tmp_path / "unplugged", tmp_path / "disk")
    assert os.lstat(away[0]).st_mtime_ns == before
    assert restore(db).restored == 1
    assert os.lstat(away[0]).st_mtime_ns == PAST - 0 * DAY
    # Deleted for good: the owner says so.
    cli = run("restore", "--forget-missing", "--json")
    assert cli.exit_code == 0 and json.loads(cli.output)["forgotten"] == 1
    assert records(db) == []


def test_restore_follows_a_file_moved_before_any_scan(tmp_path):
    """A rename and a move to another folder under the root, not scanned yet: found by content."""
    db = open_db()
    root = tmp_path / "photos"
    paths = scored_folder(db, root, [0.9, 0.5, 0.1])
    with db.atomic():  # content hashes as a scan computes them (scored_folder's are names)
        for p in paths:
            old = db.execute("SELECT sha256 FROM files WHERE path = ?", [str(p)]).fetchone()[0]
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            db.execute("UPDATE files SET sha256 = ? WHERE path = ?", [sha, str(p)])
            db.execute("UPDATE scores SET sha256 = ? WHERE sha256 = ?", [sha, old])
    copy = root / "copy.jpg"  # the same bytes, but with a time of its own: not the moved file
    shutil.copyfile(paths[2], copy)
    before = {p.name: times(p) for p in paths}
    order(db)
    (root / "sub").mkdir()
    renamed, moved = root / "renamed.jpg", root / "sub" / paths[1].name
    paths[0].rename(renamed)
    paths[1].rename(moved)
    paths[2].unlink()  # deleted; its copy has the same bytes but a time of its own: not this file
    result = restore(db)
    assert (result.restored, result.followed, result.missing, result.failed) == (2, 2, [str(paths[2])], [])
    assert times(renamed) == before[paths[0].name]
    assert times(moved) == before[paths[1].name]
    assert records(db) == [str(paths[2])]


def test_a_root_that_is_an_empty_mount_point_loses_nothing(tmp_path):
    """The root stays as an empty folder while its disk is unmounted: every record is kept."""
    db = open_db()
    root = tmp_path / "mnt"
    paths = scored_folder(db, root, [0.9, 0.5, 0.1])
    before = {p: times(p) for p in paths}
    order(db)
    disk = tmp_path / "disk-contents"
    shutil.move(root, disk)
    root.mkdir()  # the mount point, empty
    result = run("restore")
    assert result.exit_code == 0 and "3 not found under the roots" in result.output
    assert records(db) == sorted(str(p) for p in paths)
    root.rmdir()
    shutil.move(disk, root)  # mounted again
    assert run("restore").exit_code == 0
    assert {p: times(p) for p in paths} == before


def test_order_never_touches_a_file_outside_the_root_through_a_swapped_folder(tmp_path):
    """A folder under the root is replaced by a symlink to a folder outside it, with files of the
    same names: order touches none of them, and restore none either."""
    db = open_db()
    root = tmp_path / "photos"
    sub = root / "sub"
    sub.mkdir(parents=True)
    paths = scored_folder(db, sub, [0.9, 0.5, 0.1]) + scored_folder(db, root / "safe", [0.7])
    order(db)
    restore(db)
    outside = tmp_path / "outside"
    shutil.move(sub, outside)
    sub.symlink_to(outside, target_is_directory=True)
    outside_before = {p.name: times(outside / p.name) for p in paths[:3]}
    result = order(db)
    assert sorted(p for p, _ in result.failed) == sorted(str(p) for p in paths[:3])
    assert all("symlink" in why for _, why in result.failed)
    assert result.touched == 1
    assert {n: times(outside / n) for n in outside_before} == outside_before
    assert records(db) == [str(paths[3])]
    assert restore(db).restored == 1
    assert {n: times(outside / n) for n in outside_before} == outside_before


@pytest.mark.skipif(not shutil.which("feh"), reason="feh is not installed (.ci/run installs it)")
def test_feh_sorted_by_mtime_lists_photos_in_top_order(tmp_path, model_env):
    """The whole way: real photos, scan, labels, training, order, and a real viewer's listing."""
    root = tmp_path / "photos"
    for i in range(12):
        photo(root / "keep" / f"k{i:02d}.jpg", seed=i)
        photo(root / "bad" / f"b{i:02d}.png", seed=100 + i, size=(160, 120))
    for i in range(6):
        photo(root / "new" / f"n{i}.webp", seed=200 + i)
    for command in (
        ["scan", str(root), "--jobs", "1"],
        ["relabel", "keep", str(root / "keep")],
        ["relabel", "delete", str(root / "bad")],
        ["train"],
    ):
        result = run(*command)
        assert result.exit_code == 0, result.output

    def feh(*flags) -> list[str]:
        out = subprocess.run(
            ["feh", "--list", "--recursive", "--sort", "mtime", *flags, str(root)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line.split("\t")[-1] for line in out.splitlines()[1:]]

    top = [r["path"] for r in json.loads(run("top", "-n", "100", "--json").output)]
    assert len(top) == 30
    assert run("order").exit_code == 0
    assert feh() == top
    assert json.loads(run("status", "--json").output)["ordered"] == 30
    assert run("order", "--oldest-first").exit_code == 0
    assert feh("--reverse") == top
    assert run("restore").exit_code == 0


def test_order_with_nothing_scored_says_what_to_run():
    result = run("order")
    assert result.exit_code == 0
    assert "run `imgrank scan` and `imgrank train`" in result.output


def test_ranking_skips_files_outside_the_roots_and_missing_ones(tmp_path):
    db = open_db()
    paths = scored_folder(db, tmp_path / "photos", [0.3, 0.2, 0.1])
    db.execute(
        "UPDATE files SET root_id = NULL WHERE path = ?", [str(paths[0])]
    )  # a labelled folder elsewhere
    db.execute("UPDATE files SET state = 'missing' WHERE path = ?", [str(paths[1])])
    assert [r.path for r in ranked(db)] == [str(paths[2])]
    assert order_mod.order(db).ordered == 1
