"""The daemon's heartbeat: what it writes in the `daemon` table (one row: pid, start, last beat,
counters; the SQL is imgrank/store/heartbeat.py's), and whether the daemon is alive.

`imgrank status` reads it through `daemon_status` without importing watchdog or the loop.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time

from imgrank import config
from imgrank.errors import ImgrankError
from imgrank.store import heartbeat as store

INTERVAL = 10.0  # seconds between heartbeats (the default of `WatchConfig.heartbeat`)
STALE_AFTER = 3  # heartbeats missed before `status` calls the daemon dead


def beat(db, started_at: float, counters: dict, stopped: bool = False) -> None:
    """Record that the daemon is alive (or, with `stopped`, that it has stopped) and what it did."""
    if stopped:
        counters = dict(counters, stopped_at=time.time())
    store.write(db, store.Beat(None if stopped else os.getpid(), started_at, time.time(), counters))


def daemon_status(db) -> dict:
    """Whether the daemon runs (fresh heartbeat and live pid), since when, and its counters."""
    row = store.last(db)
    if row is None:
        return {"running": False, "pid": None, "started_at": None, "heartbeat_at": None, "counters": {}}
    fresh = row.heartbeat_at is not None and time.time() - row.heartbeat_at < STALE_AFTER * INTERVAL
    return {
        "running": bool(fresh and _pid_alive(row.pid)),
        "pid": row.pid,
        "started_at": row.started_at,
        "heartbeat_at": row.heartbeat_at,
        "counters": row.counters,
    }


def hold_daemon_lock() -> int:
    """Take the home's daemon lock (an flock held until the returned descriptor is closed, or the
    process ends however it ends); raise if another daemon holds it."""

    path = config.home_dir() / "watch.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ImgrankError(f"imgrank watch is already running for {config.home_dir()}") from None
    return fd


class StoreGone(ImgrankError):
    """The daemon's database is not the file it opened any more (deleted, replaced): it stops."""


def check_store(path, identity: tuple[int, int] | None) -> None:
    """Raise StoreGone (logged in one line) unless the database at `path` is the file it was."""
    if file_identity(path) != identity:
        message = (
            f"the database {path} is gone or was replaced since the daemon opened it: stopping, "
            "no photo touched (the originals it kept are not in another one)"
        )
        logging.getLogger("imgrank.daemon").error(message)
        raise StoreGone(message)


def file_identity(path) -> tuple[int, int] | None:
    """(device, inode) of a file, None if it is not there: the same file, not just the same name."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
