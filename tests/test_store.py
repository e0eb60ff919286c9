"""The database and the imgrank home in a bad state: one clear line and a non-zero exit, never a
traceback, and nothing overwritten."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import can_mount_read_only

from imgrank.cli import cli
from imgrank.store.db import open_db

COMMANDS = [["status"], ["restore"], ["order"], ["top"]]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def refused(result, words: str) -> None:
    """Exit 1, one line naming the problem, no traceback (CliRunner keeps a crash in .exception)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert words in result.output, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def a_database_with_records(home: Path, n: int = 3000) -> Path:
    """A real store several pages long, all in the main file (checkpointed, closed)."""
    db = open_db()
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO mtimes (path, original_ns, set_ns, at) VALUES (?, ?, ?, 0)",
            [(f"/photos/{i:06d}-{'x' * 80}.jpg", i, i + 1) for i in range(n)],
        )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return home / "imgrank.db"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_garbage_database_is_one_clear_line(home, command):
    home.mkdir()
    (home / "imgrank.db").write_bytes(b"these are not the bytes of an SQLite database\n" * 200)
    refused(run(*command), "not a database")
    assert (home / "imgrank.db").read_bytes().startswith(b"these are not")  # left as it was


@pytest.mark.parametrize("command", [["status"], ["restore"], ["order"]])
def test_a_truncated_database_is_one_clear_line(home, command):
    path = a_database_with_records(home)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 3)
    refused(run(*command), "database")
    assert "malformed" in run(*command).output or "not a database" in run(*command).output
    assert path.stat().st_size == size // 3


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_database_file_is_refused_not_recreated(home, command):
    home.mkdir()
    (home / "imgrank.db").touch()
    refused(run(*command), "is empty (0 bytes)")
    assert (home / "imgrank.db").stat().st_size == 0


def test_a_new_home_still_gets_a_new_database(home):
    assert run("status").exit_code == 0
    assert (home / "imgrank.db").stat().st_size > 0
    assert run("status").exit_code == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_from_a_newer_imgrank_is_refused(home, command):
    db = open_db()
    db.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('imgrank', ?, '')",
        ["m999_from_the_future"],
    )
    db.close()
    refused(run(*command), "written by a newer imgrank")


def test_home_under_a_file_or_a_file_is_one_clear_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(run("--home", str(afile / "home"), "status"), "under a file")
    result = run("--home", str(afile), "status")
    assert result.exit_code != 0 and "is a file" in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert afile.read_text() == "x"


def test_an_empty_home_is_refused_not_replaced_by_the_default(tmp_path):
    result = run("--home", "", "status")
    assert result.exit_code == 2 and "--home" in result.output and "is empty" in result.output


def test_an_unwritable_home_is_one_clear_line():
    """A home the user may read but not write (run as an unprivileged user: root writes anywhere)."""
    top = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        top.chmod(0o755)
        home = top / "locked"
        home.mkdir(mode=0o500)
        argv = [sys.executable, "-m", "imgrank", "--home", str(home), "status"]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv to drop to an unprivileged user")
            os.chown(home, 65534, 65534)
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
            probe = subprocess.run([*argv[:4], sys.executable, "-c", "import imgrank"], cwd=top)
            if probe.returncode != 0:
                pytest.skip("this imgrank cannot be imported by an unprivileged user")
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=top)
        assert proc.returncode == 1, proc.stderr
        assert "not writable" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    finally:
        shutil.rmtree(top)


def test_a_read_only_home_is_one_clear_line(tmp_path):
    """A real read-only bind mount over the home, in a private mount namespace."""
    home = tmp_path / "ro-home"
    home.mkdir()
    if not can_mount_read_only(home):
        pytest.skip("no user namespaces here for a read-only bind mount")
    shell = f'mount --bind {home} {home} && mount -o remount,ro,bind {home} && exec "$@"'
    proc = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            shell,
            "sh",
            sys.executable,
            "-m",
            "imgrank",
            "--home",
            str(home),
            "status",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert "read-only file system" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_read_then_write_transaction_waits_for_another_writer_instead_of_failing(tmp_path):
    """With a deferred BEGIN, the other process's write would slip in after our read and our
    write would fail at once with "database is locked", whatever the busy timeout."""
    path = tmp_path / "a.db"
    db = open_db(path)
    db.execute("INSERT INTO settings (key, value) VALUES ('n', '0')")

    def other_process_increments():
        conn = sqlite3.connect(path, timeout=10)
        conn.execute("UPDATE settings SET value = value + 1 WHERE key = 'n'")
        conn.commit()
        conn.close()

    with db.atomic():
        n = int(db.execute("SELECT value FROM settings WHERE key = 'n'").fetchone()[0])
        other = threading.Thread(target=other_process_increments)
        other.start()
        other.join(0.5)
        assert other.is_alive()  # it waits for our transaction
        db.execute("UPDATE settings SET value = ? WHERE key = 'n'", [str(n + 1)])
    other.join()
    assert db.execute("SELECT value FROM settings WHERE key = 'n'").fetchone()[0] == "2"  # no update lost
