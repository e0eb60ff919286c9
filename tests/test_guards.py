"""Issue 21: no store, no touching (the daemon checks its database is the file it opened, commands
never make a new store where one was, one daemon per home), failed indexing is retried, a full disk
is one line, and a killed scan leaves no process behind. Real processes, files and mounts."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import helpers
import pytest
from click.testing import CliRunner
from helpers import separable, store
from images import photo

from imgrank.cli import cli
from imgrank.store.db import open_db

IMGRANK = [sys.executable, "-m", "imgrank"]
PATIENCE = 120.0  # only a failing test waits this long


def run(*args):
    return CliRunner().invoke(cli, list(args))


def wait_for(condition, timeout: float = PATIENCE):
    return helpers.wait_for(condition, timeout)


@pytest.fixture
def scanned(tmp_path, model_env, home):
    """A root of real photos, scanned (so scored by the prior) from the command line."""
    root = tmp_path / "photos"
    for i in range(4):
        photo(root / f"p{i}.jpg", seed=i)
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    return root


def watch(root: Path, log: Path) -> subprocess.Popen:
    argv = [
        *IMGRANK,
        "watch",
        str(root),
        "--settle",
        "0.3",
        "--reorder-interval",
        "0.2",
        "--retrain-after",
        "0",
    ]
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=os.environ)


@contextlib.contextmanager
def started(root: Path, log: Path):
    """`imgrank watch root` once it has made its order at start; killed afterwards if still running."""
    daemon = watch(root, log)
    try:
        wait_for(lambda: "order at start" in log.read_text() or daemon.poll() is not None)
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


# --- 3. no store, no touching ---------------------------------------------------------------------


def test_the_daemon_stops_touching_photos_once_its_database_is_deleted(scanned, tmp_path, home):
    log = tmp_path / "daemon.log"
    with started(scanned, log) as daemon:
        assert daemon.poll() is None, log.read_text()
        for p in home.glob("imgrank.db*"):
            p.unlink()  # rm imgrank.db (and its WAL)
        times = {p: os.lstat(p).st_mtime_ns for p in scanned.iterdir()}
        new = photo(scanned / "new.jpg", seed=50)  # something to reorder for
        times[new] = os.lstat(new).st_mtime_ns
        assert daemon.wait(timeout=PATIENCE) == 1
    text = log.read_text()
    assert "is gone or was replaced since the daemon opened it: stopping" in text
    assert text.count("is gone or was replaced") == 1 and "Traceback" not in text
    assert {p: os.lstat(p).st_mtime_ns for p in times} == times  # nothing touched after the deletion


@pytest.mark.parametrize("command", [["status"], ["order"], ["restore"], ["top"]])
def test_commands_never_make_a_new_store_where_one_was(scanned, home, command):
    for p in home.glob("imgrank.db*"):
        p.unlink()
    result = run(*command)
    assert result.exit_code == 1
    assert "is gone, though this home held one: nothing was created" in result.output
    assert "--home" in result.output and "imgrank scan" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (home / "imgrank.db").exists()


def test_scan_starts_afresh_where_a_store_was(scanned, home):
    for p in home.glob("imgrank.db*"):
        p.unlink()
    assert run("scan", str(scanned), "--jobs", "1").exit_code == 0
    assert open_db().execute("SELECT count(*) FROM files").fetchone()[0] == 4
    assert run("status").exit_code == 0


def test_no_command_makes_a_new_store_after_rm_rf_of_the_home_under_a_running_daemon(scanned, tmp_path, home):
    log = tmp_path / "daemon.log"
    with started(scanned, log) as daemon:
        assert daemon.poll() is None, log.read_text()
        shutil.rmtree(home)  # rm -rf $IMGRANK_HOME: the marker goes with it
        photo(scanned / "new.jpg", seed=50)  # something to reorder for
        assert daemon.wait(timeout=PATIENCE) == 1
    for command in (["status"], ["order"], ["watch", str(scanned)]):
        done = subprocess.run([*IMGRANK, *command], capture_output=True, text=True, timeout=PATIENCE)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "is gone, though this home held one: nothing was created" in done.stderr
        assert "--home" in done.stderr and "imgrank scan" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout
        assert not (home / "imgrank.db").exists()
    listed = Path(os.environ["XDG_STATE_HOME"]) / "imgrank" / "homes"
    assert listed.read_text() == f"{home / 'imgrank.db'}\n"
    assert (listed.stat().st_mode & 0o777, listed.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    # `imgrank scan` starts afresh there, and the commands work again
    assert subprocess.run([*IMGRANK, "scan", str(scanned), "--jobs", "1"], timeout=PATIENCE).returncode == 0
    assert subprocess.run([*IMGRANK, "status"], capture_output=True, timeout=PATIENCE).returncode == 0
    assert listed.read_text() == f"{home / 'imgrank.db'}\n"


@pytest.mark.parametrize("daemon_dies", [False, True], ids=["daemon running", "daemon killed"])
def test_a_database_truncated_to_nothing_beside_its_wal_is_refused_not_rebuilt(
    scanned, tmp_path, home, daemon_dies
):
    log = tmp_path / "daemon.log"
    with started(scanned, log) as daemon:
        photo(scanned / "new.jpg", seed=50)
        wait_for(lambda: "order updated after new.jpg" in log.read_text() or daemon.poll() is not None)
        assert daemon.poll() is None, log.read_text()
        if daemon_dies:
            daemon.kill()  # its -wal and -shm stay, as after a crash
            daemon.wait()
        db, wal = home / "imgrank.db", home / "imgrank.db-wal"
        assert wal.stat().st_size > 0
        wal_bytes = wal.read_bytes()
        os.truncate(db, 0)
        for command in (["status"], ["restore"]):
            done = subprocess.run([*IMGRANK, *command], capture_output=True, text=True, timeout=PATIENCE)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
            assert f"database {db} is empty (0 bytes): it lost its contents" in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "locked" not in done.stderr
            assert db.stat().st_size == 0  # left as it was, not rebuilt
            assert wal.read_bytes() == wal_bytes or not daemon_dies  # (a running daemon writes on)


def test_two_daemons_started_at_the_same_instant_one_runs(scanned, tmp_path):
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    daemons = [watch(scanned, log) for log in logs]
    try:
        done = wait_for(lambda: [d for d in daemons if d.poll() is not None])
        assert len(done) == 1 and done[0].returncode == 1
        loser = logs[daemons.index(done[0])].read_text()
        assert "imgrank watch is already running for" in loser
        other = daemons[1 - daemons.index(done[0])]
        wait_for(
            lambda: "order at start" in logs[daemons.index(other)].read_text() or other.poll() is not None
        )
        assert other.poll() is None
    finally:
        for d in daemons:
            if d.poll() is None:
                d.terminate()
                d.wait(timeout=PATIENCE)


# --- 5. failed indexing is retried, a full disk is one line -----------------------------------------


def test_indexing_that_failed_is_retried_and_not_counted(scanned, monkeypatch):
    from imgrank import index
    from imgrank.daemon import loop

    real = index.index_paths
    full = threading.Event()
    full.set()

    def index_paths(db, paths, *args, **kwargs):
        if full.is_set():
            raise OSError(28, "No space left on device")
        return real(db, paths, *args, **kwargs)

    monkeypatch.setattr(index, "index_paths", index_paths)
    w = loop.Watcher([scanned], loop.WatchConfig(settle=0.3, reorder_interval=0.2, heartbeat=0.5))
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        assert w.ready.wait(PATIENCE)
        new = photo(scanned / "new.jpg", seed=60)
        wait_for(lambda: w.counters["errors"] >= 1)
        assert w.counters["indexed"] == 0
        full.clear()  # space again: the next heartbeat tries it again
        row = "SELECT state FROM files WHERE path = ?"
        wait_for(lambda: open_db().execute(row, [str(new)]).fetchone() == ("ok",))
        wait_for(lambda: w.counters["indexed"] == 1)
    finally:
        w.stop()
        t.join(PATIENCE)


@pytest.fixture
def tiny_disk(tmp_path):
    """Mount a 4 KiB tmpfs on a folder (a full disk); skip where no mount can be made."""

    def mount(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    mounted: list[Path] = []
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_train_on_a_full_disk_is_one_line(home, tiny_disk):
    db = open_db()
    x, y = separable(120, seed=3)
    store(db, x, y)
    tiny_disk(home / "heads")
    (home / "heads" / "filler").write_bytes(b"x" * 4096)  # the 4 KiB are taken
    result = run("train", "--epochs", "5")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "no space left on the disk" in result.output
    assert len(result.output.strip().splitlines()) == 1 or "Error:" in result.output.splitlines()[-1]
    assert "Traceback" not in result.output


def test_thumbnails_are_made_only_for_photos_that_are_not_small_and_stop_at_the_cap(
    tmp_path, model_env, home
):
    """20,000 tiny photos took 82 MB of thumbnails, more than the photos themselves."""
    import json

    small_photo = 48 << 10  # thumbs.SMALL_PHOTO: a photo under it is small enough to be its own
    root = tmp_path / "photos"
    tiny = [photo(root / f"tiny{i}.jpg", seed=i, size=(64, 48)) for i in range(3)]
    big = [photo(root / f"big{i}.png", seed=10 + i, size=(320, 240)) for i in range(2)]
    assert all(p.stat().st_size < small_photo for p in tiny) and all(
        p.stat().st_size >= small_photo for p in big
    )
    subprocess.run([*IMGRANK, "-q", "scan", str(root)], check=True, env=os.environ)
    assert len(list((home / "thumbs").rglob("*.jpg"))) == 2
    status = run("status")
    assert "thumbnails: 2 (" in status.output and "MB of at most 500 MB" in status.output
    assert json.loads(run("status", "--json").output)["thumbnails"]["count"] == 2
    capped = tmp_path / "capped-home"
    env = dict(os.environ, IMGRANK_HOME=str(capped), IMGRANK_THUMBS_MB="0")
    subprocess.run([*IMGRANK, "-q", "scan", str(root)], check=True, env=env)
    assert not list((capped / "thumbs").rglob("*.jpg"))


# --- 6. nothing left behind -------------------------------------------------------------------------


def session_processes(sid: int) -> list[str]:
    """The command lines of the live processes in a session (the scan's children inherit it)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie waiting for its reaper: it runs nothing
            out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ProcessLookupError):
            continue
    return out


def test_a_scan_killed_with_sigkill_leaves_no_process(tmp_path, model_env):
    root = tmp_path / "photos"
    for i in range(120):
        photo(root / f"p{i:03d}.jpg", seed=i, size=(1600, 1200))
    scan = subprocess.Popen(
        [*IMGRANK, "-q", "scan", str(root), "--jobs", "2"],
        env=os.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Its fork server, resource tracker and two decoding workers are up.
        wait_for(lambda: len(session_processes(scan.pid)) >= 5 or scan.poll() is not None)
        assert scan.poll() is None, "the scan ended before it could be killed: give it more photos"
    finally:
        scan.send_signal(signal.SIGKILL)
        scan.wait()
    end = time.monotonic() + 5
    while session_processes(scan.pid) and time.monotonic() < end:
        time.sleep(0.05)
    left = session_processes(scan.pid)
    for pid in [p for p in Path("/proc").iterdir() if p.name.isdigit()]:  # clean up after a failure
        try:
            if os.getsid(int(pid.name)) == scan.pid:
                os.kill(int(pid.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    assert left == [], f"left running 5 s after the scan was killed: {left}"
