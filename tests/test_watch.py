"""The daemon with a real observer on real files: settling, deletions, renames, no event loop, signals."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import activate_random_head, wait_for
from images import photo

from imgrank.config import home_dir
from imgrank.daemon import debounce, loop
from imgrank.daemon import roots as daemon_roots
from imgrank.order import order, restore
from imgrank.order import ranked as ranking
from imgrank.runs import score_all
from imgrank.store.db import open_db

SETTLE = 0.3
# How long a wait for something the daemon will do may take before the test fails: far beyond what
# it needs (well under a second), as a loaded CI machine can be many times slower. Only a failing
# test ever waits this long.
PATIENCE = 60.0


def q(sql: str, params=()):
    db = open_db()
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def imgrank_children() -> list[tuple[int, list[str]]]:
    """Live children of this process that run imgrank itself (`python -m imgrank ...`, such as the
    daemon's retraining). Not multiprocessing's forkserver or resource tracker, which pytest keeps
    for its whole run, and not anything else whose command line merely mentions "imgrank" (a clone
    of this project is a folder named imgrank, so the venv's path does)."""
    me = os.getpid()
    found = []
    for pid in Path(f"/proc/{me}/task/{me}/children").read_text().split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        if any(argv[i : i + 2] == ["-m", "imgrank"] for i in range(len(argv))):
            found.append((int(pid), argv))
    return found


@pytest.fixture
def no_leaks():
    """No thread or imgrank child process outlives the test."""
    before = set(threading.enumerate())
    yield
    wait_for(lambda: not (set(threading.enumerate()) - before))
    assert imgrank_children() == []


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"old{i}.jpg", seed=i)
    return root


@pytest.fixture
def daemon(model_env, roots, no_leaks):
    """Start a watcher in a thread (settle 0.3 s); yields a function that starts it with overrides."""
    started = []

    def start(**overrides):
        cfg = loop.WatchConfig(**{"settle": SETTLE, "reorder_interval": 0.2, "heartbeat": 0.5, **overrides})
        w = loop.Watcher([roots], cfg)
        out = {}
        t = threading.Thread(target=lambda: out.update(w.run()), daemon=True)
        t.start()
        started.append((w, t))
        wait_for(lambda: w.ready.is_set() or not t.is_alive(), timeout=2 * PATIENCE)
        assert t.is_alive(), "watcher died on start"
        return w

    yield start
    for w, t in started:
        w.stop()
        t.join(timeout=PATIENCE)
        assert not t.is_alive()


def file_row(path):
    rows = q("SELECT sha256, state, size FROM files WHERE path = ?", [str(path)])
    return rows[0] if rows else None


def test_catch_up_then_a_new_photo_is_indexed_and_scored(daemon, roots):
    w = daemon()
    assert len(q("SELECT * FROM files WHERE state = 'ok'")) == 3
    activate_random_head()
    new = photo(roots / "sub" / "new.jpg", seed=10)
    wait_for(
        lambda: q("SELECT s.score FROM scores s JOIN files f USING (sha256) WHERE f.path = ?", [str(new)])
    )
    # The photo is scored a moment before the daemon's thread counts the batch.
    wait_for(lambda: w.counters["embedded"] >= 1)
    assert w.counters["embedded"] == 1


def test_a_slow_copy_is_embedded_once_after_it_settles(daemon, roots, tmp_path):
    # The writer pauses a sixth of the settle time between chunks: slower than a fast disk, and far
    # enough below the settle time that a loaded machine delaying the writer does not reach it.
    settle, pause = 1.8, 0.3
    w = daemon(settle=settle)
    src = photo(tmp_path / "src.jpg", seed=20, size=(640, 480))
    data = src.read_bytes()
    dest = roots / "copy.jpg"
    with open(dest, "wb") as f:
        for i in range(0, len(data), len(data) // 6 + 1):
            f.write(data[i : i + len(data) // 6 + 1])
            f.flush()
            time.sleep(pause)
            assert file_row(dest) is None, "read while still being written"
    wait_for(lambda: file_row(dest) and file_row(dest)[1] == "ok")
    wait_for(lambda: w.counters["embedded"] >= 1)  # counted a moment after the row is written
    time.sleep(settle)  # and nothing more comes of it
    assert w.counters["embedded"] == 1
    assert w.counters["batches"] == 1
    assert file_row(dest)[2] == len(data)


def test_a_copy_by_a_writer_that_closes_after_each_chunk_is_read_complete(daemon, roots, tmp_path):
    w = daemon()
    data = photo(tmp_path / "src.jpg", seed=21, size=(640, 480)).read_bytes()
    dest = roots / "chunks.jpg"
    for i in range(0, len(data), 4096):
        with open(dest, "ab") as f:
            f.write(data[i : i + 4096])
    wait_for(lambda: file_row(dest) and file_row(dest)[2] == len(data))
    assert file_row(dest)[1] == "ok"
    # The row is committed a moment before the daemon's thread counts the batch.
    wait_for(lambda: w.counters["embedded"] >= 1)
    assert w.counters["embedded"] == 1


def test_a_burst_of_new_photos_is_embedded_in_few_batches(daemon, roots, tmp_path):
    # The copies take milliseconds; a settle time of a second and a half leaves room for a loaded
    # machine to pause the copying without the burst looking like two.
    w = daemon(settle=1.5)
    staged = tmp_path / "staged"
    for i in range(40):
        photo(staged / f"b{i:02}.jpg", seed=100 + i, size=(64, 48))
    for p in sorted(staged.iterdir()):
        shutil.copy(p, roots / p.name)
    wait_for(lambda: w.counters["embedded"] == 40)
    assert w.counters["batches"] <= 3


def test_deleting_a_photo_labels_it_delete_and_keeps_its_vector(daemon, roots):
    w = daemon()
    target = roots / "old1.jpg"
    sha = file_row(target)[0]
    target.unlink()
    wait_for(lambda: q("SELECT label, source FROM labels WHERE sha256 = ?", [sha]))
    assert q("SELECT label, source FROM labels WHERE sha256 = ?", [sha]) == [("delete", "deleted")]
    assert q("SELECT source, path FROM label_history WHERE sha256 = ?", [sha]) == [("deleted", str(target))]
    assert file_row(target)[1] == "missing"
    assert q("SELECT count(*) FROM vectors WHERE sha256 = ?", [sha]) == [(1,)]
    assert w.counters["labels"] == 1


def test_with_no_learn_from_deletes_a_deletion_only_marks_missing(daemon, roots):
    w = daemon(learn_from_deletes=False)
    target = roots / "old0.jpg"
    target.unlink()
    wait_for(lambda: file_row(target)[1] == "missing")
    assert q("SELECT count(*) FROM labels") == [(0,)]
    assert w.counters["deleted"] == 1


def test_a_rename_and_a_folder_move_re_embed_nothing_and_keep_labels(daemon, roots):
    from imgrank.store.labels import set_label

    w = daemon()
    sha = file_row(roots / "old0.jpg")[0]
    db = open_db()
    set_label(db, sha, "keep", "user")
    db.close()
    (roots / "album").mkdir()
    os.rename(roots / "old0.jpg", roots / "album" / "renamed.jpg")
    os.rename(roots / "album", roots / "album2")
    wait_for(lambda: file_row(roots / "album2" / "renamed.jpg"))
    time.sleep(SETTLE * 4)
    assert file_row(roots / "album2" / "renamed.jpg")[:2] == (sha, "ok")
    assert file_row(roots / "old0.jpg") is None
    assert w.counters["embedded"] == 0 and w.counters["labels"] == 0
    assert q("SELECT label FROM labels WHERE sha256 = ?", [sha]) == [("keep",)]


def test_a_renamed_photo_is_scored_again_under_its_new_name(daemon, roots):
    w = daemon()
    activate_random_head()
    score_all(open_db())

    def score(path):
        rows = q("SELECT s.score FROM scores s JOIN files f USING (sha256) WHERE f.path = ?", [str(path)])
        return rows[0][0] if rows else None

    before = score(roots / "old0.jpg")
    os.rename(roots / "old0.jpg", roots / "kept-for-the-album.jpg")
    after = wait_for(lambda: score(roots / "kept-for-the-album.jpg"))
    assert after != before  # the file name is one of the head's features
    assert w.counters["embedded"] == 0


def test_a_copy_of_a_scored_photo_takes_its_place_in_the_order(daemon, roots):
    daemon()
    activate_random_head()
    score_all(open_db())
    copy = roots / "copy-of-old1.jpg"
    shutil.copyfile(roots / "old1.jpg", copy)  # same content (already scored), a new file

    def ordered() -> bool:  # the record is written a moment before the file is touched
        rows = q("SELECT set_ns FROM mtimes WHERE path = ?", [str(copy)])
        return bool(rows) and rows[0][0] == os.lstat(copy).st_mtime_ns

    wait_for(ordered)


def test_deleting_a_folder_gives_no_labels(daemon, roots):
    w = daemon()
    for i in range(3):
        photo(roots / "trip" / f"t{i}.jpg", seed=30 + i, size=(64, 48))
    wait_for(
        lambda: len(q("SELECT * FROM files WHERE path LIKE ? AND state = 'ok'", [f"{roots}/trip/%"])) == 3
    )
    shutil.rmtree(roots / "trip")
    wait_for(
        lambda: (
            len(q("SELECT * FROM files WHERE path LIKE ? AND state = 'missing'", [f"{roots}/trip/%"])) == 3
        )
    )
    time.sleep(SETTLE * 2)
    assert q("SELECT count(*) FROM labels") == [(0,)]
    assert w.counters["labels"] == 0


def test_a_burst_of_deletions_beyond_the_threshold_gives_no_labels(daemon, roots):
    w = daemon(max_delete_burst=2)
    for p in list(roots.glob("*.jpg")):
        p.unlink()
    wait_for(lambda: len(q("SELECT * FROM files WHERE state = 'missing'")) == 3)
    assert q("SELECT count(*) FROM labels") == [(0,)]
    assert w.counters["labels"] == 0


def test_a_root_that_disappears_gives_no_labels_and_is_picked_up_again(daemon, roots, tmp_path):
    w = daemon()
    away = tmp_path / "unmounted"
    os.rename(roots, away)  # the disk goes away
    wait_for(lambda: w.roots.offline)
    assert q("SELECT count(*) FROM labels") == [(0,)]
    assert q("SELECT count(*) FROM files WHERE state = 'missing'") == [(0,)]
    photo(away / "while-away.jpg", seed=40)
    os.rename(away, roots)  # and comes back, with a new photo
    wait_for(lambda: file_row(roots / "while-away.jpg"))
    assert not w.roots.offline
    assert q("SELECT count(*) FROM labels") == [(0,)]
    new = photo(roots / "after.jpg", seed=41)
    wait_for(lambda: file_row(new))


def test_a_folder_added_by_scan_while_the_daemon_runs_is_watched(daemon, roots, tmp_path):
    from imgrank.index import add_roots

    w = daemon()
    more = tmp_path / "phone-import"
    first = photo(more / "first.jpg", seed=50)
    db = open_db()
    add_roots(db, [more])  # what `imgrank scan MORE` does first
    db.close()
    wait_for(lambda: file_row(first))  # caught up at the next heartbeat
    later = photo(more / "sub" / "later.jpg", seed=51)
    wait_for(lambda: file_row(later))  # and watched from then on
    assert more in w.roots.roots and w.counters["errors"] == 0


HOLD_SCAN_LOCK = """
import sys
from imgrank.index import scan_lock
with scan_lock():
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def test_the_daemon_waits_for_a_scan_in_another_process_and_still_stops_at_once(daemon, roots, caplog):
    caplog.set_level(logging.INFO, logger="imgrank.daemon")
    w = daemon()
    holders = []

    def hold() -> None:
        holders.append(subprocess.Popen([sys.executable, "-c", HOLD_SCAN_LOCK], stdin=-1, stdout=-1))
        assert holders[-1].stdout.readline() == b"held\n"

    def waits() -> int:
        return caplog.text.count("waiting for a scan in another process")

    try:
        hold()
        first = photo(roots / "during-a-scan.jpg", seed=90)
        wait_for(lambda: waits() == 1)
        assert file_row(first) is None  # not indexed beside the scan
        holders[-1].stdin.close()
        wait_for(lambda: file_row(first) and file_row(first)[1] == "ok")  # once the scan is done
        hold()
        photo(roots / "during-another.jpg", seed=91)
        wait_for(lambda: waits() == 2)
        w.stop()  # while it waits: it stops without waiting for the scan to finish
        wait_for(lambda: json.loads(q("SELECT counters FROM daemon")[0][0]).get("stopped_at"))
        assert holders[-1].poll() is None  # the other scan still holds the lock
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_order_and_touches_do_not_wake_the_daemon_into_work(daemon, roots):
    w = daemon()
    activate_random_head()
    wait_for(lambda: w.counters["reorders"] == 1)  # its order at start (by the prior) is done
    before = dict(w.counters)
    db = open_db()
    score_all(db)
    restore(db)  # whatever the daemon ordered goes back, then every photo gets a new mtime:
    assert order(db).touched == 3  # neither is work for the daemon
    db.close()
    time.sleep(SETTLE * 5)
    for key in ("indexed", "embedded", "batches", "reorders", "scored", "deleted"):
        assert w.counters[key] == before[key], key


def test_a_bad_file_does_not_stop_the_daemon(daemon, roots):
    w = daemon()
    (roots / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    wait_for(lambda: file_row(roots / "broken.jpg"))
    assert file_row(roots / "broken.jpg")[1] == "unreadable"
    good = photo(roots / "good.jpg", seed=50)
    wait_for(lambda: file_row(good) and file_row(good)[1] == "ok")
    assert w.roots.observer.is_alive()


def test_heartbeat_and_counters_show_in_status(daemon, roots):
    from click.testing import CliRunner

    from imgrank.cli import cli

    daemon()
    photo(roots / "n.jpg", seed=60)
    wait_for(lambda: json.loads(q("SELECT counters FROM daemon")[0][0]).get("indexed") == 1)
    out = CliRunner().invoke(cli, ["status", "--json"])
    info = json.loads(out.output)["daemon"]
    assert info["running"] and info["pid"] == os.getpid()
    assert info["counters"]["indexed"] == 1 and info["counters"]["moved"] == 0
    text = CliRunner().invoke(cli, ["status"]).output
    assert "daemon: running" in text and "1 photo indexed" in text
    assert "moved" not in text and "retrain" not in text  # zero counts are left out


def test_inotify_limit_falls_back_to_polling(daemon, roots, monkeypatch, caplog):
    class FullObserver(daemon_roots.PollingObserver):  # stands in for inotify hitting its watch limit
        def schedule(self, *a, **k):
            raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(daemon_roots, "Observer", FullObserver)
    w = daemon()
    assert w.roots.polling
    assert "fs.inotify.max_user_watches" in caplog.text
    new = photo(roots / "polled.jpg", seed=70)
    wait_for(lambda: file_row(new))


def test_settler_hands_out_a_file_once_after_it_holds_still(tmp_path):
    s = debounce.Settler(settle=1.0)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x")
    s.touch(str(f), now=0.0)
    assert s.ready(0.5) == []
    f.write_bytes(b"xy")  # grew meanwhile
    assert s.ready(1.0) == [] and s.next_due() == 2.0
    assert s.ready(2.0) == [str(f)]
    assert s.ready(10.0) == [] and len(s) == 0


def test_delete_burst_spans_a_continuous_rm(tmp_path):
    b = debounce.DeleteBurst(settle=1.0)
    b.add("/r/a.jpg", 0.0)
    b.add("/r/b.jpg", 0.9)
    b.add("/r/d", 1.2, is_dir=True)
    assert b.due() == pytest.approx(1.7)
    files, dirs = b.take()
    assert set(files) == {"/r/a.jpg", "/r/b.jpg"} and dirs == {"/r/d"} and b.due() is None


@pytest.mark.slow
def test_the_daemon_process_stops_cleanly_on_sigterm_and_never_imports_torch(model_env, roots, home):
    open_db().close()  # created (and migrated) before two processes race to do it
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgrank", "watch", str(roots), "--settle", "0.3"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (home / "imgrank.db").exists() and q("SELECT pid FROM daemon WHERE pid IS NOT NULL"),
            2 * PATIENCE,
        )
        # The catch-up at start is over (its order has set the 3 photos' times): a photo made now
        # arrives through the observer, not the catch-up's walk (which would leave `indexed` at 0).
        wait_for(lambda: q("SELECT count(*) FROM mtimes")[0][0] == 3, 2 * PATIENCE)
        new = photo(roots / "live.jpg", seed=80)
        wait_for(lambda: file_row(new))
        wait_for(lambda: json.loads(q("SELECT counters FROM daemon")[0][0]).get("indexed"))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            print(proc.stderr.read())
    pid, counters = q("SELECT pid, counters FROM daemon")[0]
    counters = json.loads(counters)
    assert pid is None and counters["stopped_at"]
    assert counters["torch_loaded"] is False
    log = proc.stderr.read()
    assert "Traceback" not in log
    # Each line carries its time, and the photo that arrived is named.
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(stamp + rf" INFO arrived: {re.escape(str(new))}$", log, re.M), log


@pytest.mark.slow
def test_enough_new_labels_retrain_in_a_separate_process(daemon, roots):
    from imgrank.store.labels import set_label

    for i in range(24):
        photo(roots / f"many{i:02}.jpg", seed=200 + i, size=(64, 48))
    w = daemon(retrain_after=20)
    db = open_db()
    paths = [p for (p,) in db.execute("SELECT path FROM files WHERE path LIKE '%many%' ORDER BY path")]
    for path in paths[:12]:
        set_label(
            db, db.execute("SELECT sha256 FROM files WHERE path = ?", [path]).fetchone()[0], "keep", "user"
        )
    db.close()
    for path in paths[12:]:
        os.unlink(path)
    wait_for(lambda: w.counters["labels"] == 12)
    wait_for(lambda: w.retrainer.running or w.counters["retrains"])
    # The child runs at a low CPU and IO priority: on a busy machine importing torch alone can take
    # minutes. Wait as long as it runs (a hang still fails, after 15 minutes), then for the result.
    child = w.retrainer.child
    if child is not None:
        wait_for(lambda: child.poll() is not None, timeout=15 * PATIENCE, every=0.5)
    wait_for(lambda: not w.retrainer.running)  # the daemon has taken its result
    assert w.counters["retrains"] == 1, (home_dir() / "train.log").read_text()[-2000:]
    assert q("SELECT count(*) FROM runs WHERE active = 1") == [(1,)]
    assert not w.retrainer.running


@pytest.mark.skipif(not shutil.which("feh"), reason="feh is not installed (.ci/run installs it)")
def test_feh_stays_in_score_order_as_photos_are_added_renamed_and_deleted(daemon, roots):
    """The daemon's promise, seen through a real viewer's listing."""

    def feh() -> list[str]:
        out = subprocess.run(
            ["feh", "--list", "--recursive", "--sort", "mtime", str(roots)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line.split("\t")[-1] for line in out.splitlines()[1:]]

    def in_order() -> bool:
        db = open_db()
        try:  # the order: by score, the shots of a burst after their keeper (the daemon groups them)
            ranked = [r.path for r in ranking(db)]
        finally:
            db.close()
        listed = feh()
        return bool(ranked) and listed == ranked and set(listed) == {str(p) for p in roots.rglob("*.jpg")}

    w = daemon()
    activate_random_head()
    score_all(open_db())
    for i in range(4):
        photo(roots / "new" / f"n{i}.jpg", seed=70 + i)
    wait_for(in_order)
    os.rename(roots / "new" / "n0.jpg", roots / "renamed.jpg")
    (roots / "old1.jpg").unlink()
    wait_for(lambda: w.counters["deleted"] == 1 and in_order())
    assert w.counters["embedded"] == 4  # the rename re-embedded nothing


def test_the_leak_check_sees_imgrank_children_and_nothing_else(model_env, roots, tmp_path):
    from imgrank.daemon.retrain import start_low_priority

    # Named like a process in a clone of this project, but not imgrank itself: not a leak.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "/src/imgrank/.venv"])
    ours = start_low_priority([sys.executable, "-m", "imgrank", "watch", str(roots)], tmp_path / "w.log")
    try:
        found = wait_for(imgrank_children)
        assert [pid for pid, _ in found] == [ours.pid]
    finally:
        for proc in (other, ours):
            proc.kill()
            proc.wait()
    assert imgrank_children() == []


DAEMON_AT_WORK = """
import json, os, sys, threading, time
from pathlib import Path
from imgrank.daemon import loop

root = Path(sys.argv[1])
w = loop.Watcher([root], loop.WatchConfig(settle=0.3, reorder_interval=0.2, heartbeat=0.5))
t = threading.Thread(target=w.run)
t.start()
assert w.ready.wait(120), "not ready"
from PIL import Image
Image.new("RGB", (64, 48), (10, 200, 30)).save(root / "new.jpg")
(root / "old0.jpg").unlink()
os.rename(root / "old1.jpg", root / "renamed.jpg")
end = time.monotonic() + 60
while time.monotonic() < end and not (w.counters["deleted"] and w.counters["moved"] and w.counters["scored"]):
    time.sleep(0.05)
time.sleep(1)
w.stop()
t.join(30)
loaded = {name: name in sys.modules for name in ("torch", "sklearn")}
print(json.dumps({"counters": w.counters, **loaded}))
"""


@pytest.mark.slow
def test_the_daemon_at_work_never_imports_torch_in_a_fresh_process(model_env, roots):
    from click.testing import CliRunner

    from imgrank.cli import cli

    assert CliRunner().invoke(cli, ["scan", str(roots)]).exit_code == 0
    activate_random_head()  # scoring with a head (numpy), not only the prior
    proc = subprocess.run(
        [sys.executable, "-c", DAEMON_AT_WORK, str(roots)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    c = out["counters"]
    assert c["embedded"] == 1 and c["scored"] >= 1 and c["reorders"] >= 1, c
    assert c["deleted"] == 1 and c["moved"] == 1 and c["errors"] == 0, c
    assert out["torch"] is False and c["torch_loaded"] is False
    assert out["sklearn"] is False  # scoring is numpy: scikit-learn is for training only


def test_status_reads_the_heartbeat_without_watchdog_or_torch(model_env, roots):
    code = (
        "import sys; from imgrank.cli import cli; cli(['status'], standalone_mode=False); "
        "print('MODULES', 'watchdog' in sys.modules, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "daemon: not running" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "MODULES False False"


def test_a_deletion_then_a_scan_at_once_still_labels_it(daemon, roots):
    """A scan that sees the deletion first marks the photo missing; the daemon must still judge it."""
    from click.testing import CliRunner

    from imgrank.cli import cli

    # The daemon waits out the burst (6 s) while the scan (well under a second, a few seconds on a
    # loaded machine) gets there first.
    w = daemon(settle=6.0)
    target = roots / "old2.jpg"
    sha = file_row(target)[0]
    target.unlink()
    result = CliRunner().invoke(cli, ["scan", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(result.output)["missing"] == 1 and file_row(target)[1] == "missing"
    assert w.counters["deleted"] == 0  # the scan was first
    wait_for(lambda: w.counters["deleted"] == 1)
    assert q("SELECT label, source FROM labels WHERE sha256 = ?", [sha]) == [("delete", "deleted")]


def test_a_move_by_copy_and_rm_is_a_move_when_the_copys_times_are_set_after_it_was_read(daemon, roots):
    """`mv` to another disk, `cp -p a b && rm a`, rsync --remove-source-files: the copy is written
    and closed, then its times are set (an attribute change, which wakes nothing), then the source
    goes. Had the daemon looked at the copy before its times were set, the copy waited another
    settle while the deletion fell due, and the deletion was judged first: a photo moved, labelled
    delete (test_originals saw it once in the whole suite)."""
    dest = roots / "elsewhere" / "old1.jpg"
    dest.parent.mkdir()  # watched from the start (a file in a folder just made may come unannounced)
    w = daemon()
    src = roots / "old1.jpg"
    sha = file_row(src)[0]
    st = src.stat()
    dest.write_bytes(src.read_bytes())
    wait_for(lambda: (p := w.settler.pending.get(str(dest))) is not None and p.closed, every=0.005)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    src.unlink()
    wait_for(lambda: w.counters["moved"] + w.counters["deleted"] >= 1)
    assert (w.counters["moved"], w.counters["deleted"]) == (1, 0), dict(w.counters)
    assert q("SELECT count(*) FROM labels WHERE sha256 = ?", [sha]) == [(0,)]
    assert file_row(dest)[:2] == (sha, "ok") and file_row(src) is None


def test_a_photo_marked_missing_long_before_is_not_judged_again(daemon, roots):
    """The other side: a row a scan marked missing before this deletion gives no label."""
    w = daemon(settle=0.5)
    target = roots / "old2.jpg"
    db = open_db()
    db.execute("UPDATE files SET state = 'missing', last_seen = 0 WHERE path = ?", [str(target)])
    db.conn.commit()
    db.close()
    target.unlink()
    wait_for(lambda: w.deletes.due() is None and w.counters["events"] >= 1)
    time.sleep(SETTLE * 3)
    assert w.counters["deleted"] == 0 and q("SELECT count(*) FROM labels") == [(0,)]


def test_a_renamed_photo_gets_its_new_name_embedded_and_the_score_scan_gives(daemon, roots):
    from click.testing import CliRunner

    from imgrank.cli import cli

    w = daemon()
    activate_random_head()
    score_all(open_db())
    new = roots / "kept-for-the-album.jpg"
    os.rename(roots / "old0.jpg", new)

    def score():
        rows = q("SELECT s.score FROM scores s JOIN files f USING (sha256) WHERE f.path = ?", [str(new)])
        return rows[0][0] if rows else None

    by_daemon = wait_for(score)
    assert q("SELECT count(*) FROM name_vectors WHERE name = ?", [new.name]) == [(1,)]
    result = CliRunner().invoke(cli, ["score"])  # every photo scored again from the store
    assert result.exit_code == 0 and result.exception is None, result.output
    assert score() == pytest.approx(by_daemon, abs=1e-6)
    assert w.counters["embedded"] == 0  # the image itself was not read again


def test_the_daemon_orders_at_start_without_any_file_changing(model_env, roots, daemon):
    from click.testing import CliRunner

    from imgrank.cli import cli

    assert CliRunner().invoke(cli, ["scan", str(roots)]).exit_code == 0
    activate_random_head()
    assert CliRunner().invoke(cli, ["score"]).exit_code == 0  # scored, never ordered
    assert q("SELECT count(*) FROM mtimes") == [(0,)]
    w = daemon()
    wait_for(lambda: w.counters["reorders"] >= 1)
    ordered = {p for (p,) in q("SELECT path FROM mtimes")}
    assert ordered == {str(p) for p in roots.glob("*.jpg")}
    assert w.counters["indexed"] == 0  # nothing had changed


def test_log_lines_name_the_photo_that_arrived_moved_or_was_deleted(daemon, roots, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="imgrank.daemon")
    w = daemon()
    activate_random_head()
    new = photo(roots / "fresh.jpg", seed=95)
    wait_for(lambda: "order updated after fresh.jpg arrived" in caplog.text)
    os.rename(roots / "old0.jpg", roots / "moved-here.jpg")
    (roots / "old1.jpg").unlink()
    wait_for(lambda: w.counters["deleted"] == 1 and w.counters["moved"] == 1)
    text = caplog.text
    assert f"arrived: {new}" in text
    assert f"moved: {roots / 'old0.jpg'} -> {roots / 'moved-here.jpg'}" in text
    assert f"deleted: {roots / 'old1.jpg'} (labelled delete)" in text
    assert "1 photos" not in text and " 0 " not in text


def test_deleting_one_of_two_exact_copies_is_logged_by_name(daemon, roots, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="imgrank.daemon")
    copy = roots / "copy-of-old2.jpg"
    copy.write_bytes((roots / "old2.jpg").read_bytes())
    w = daemon()
    copy.unlink()
    wait_for(lambda: w.counters["moved"] == 1)
    wait_for(lambda: f"gone: {copy} (the same photo is at another path" in caplog.text)
    assert w.counters["labels"] == 0


def test_a_big_catch_up_orders_its_first_photos_before_it_ends(daemon, roots, caplog, monkeypatch):
    """The daemon's first catch-up of a big folder orders the first photos embedded (here: after 2,
    in batches of 2) while it goes on, as `scan --order` does; then everything at the start."""
    import logging

    from imgrank import first_order, index

    monkeypatch.setattr(first_order, "FIRST_ORDER_AFTER", 2)
    monkeypatch.setattr(index.pipeline, "BATCH", 2)
    caplog.set_level(logging.INFO, logger="imgrank.daemon")
    w = daemon()
    wait_for(lambda: w.counters["reorders"] >= 1)
    text = caplog.text
    early = text.index("order updated after the first photos of a catch-up")
    assert early < text.index("caught up with") < text.index("order at start")
