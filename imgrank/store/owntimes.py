"""imgrank's own times: the `mtimes` table, its lock, and the one place that sets a photo's time.

Each record holds a touched file's original mtime (kept across later orders), the time imgrank
set last, the imgrank time before that until its touch is done, and the file's content hash (to
find it again after a move nobody scanned). Only this module runs SQL on `mtimes` and only its
`Toucher` calls `os.utime` on a photo.

Paths are stored in imgrank.files' reversible text form (db_path) and returned as ordinary `str`
paths (fs_path): a name that is not UTF-8 is a photo like any other.

Every record-then-touch (order, restore, a scan or the daemon following a move) runs under
`locked(db)`: an exclusive `flock` on a file beside the database, held across reading the
records, writing them and touching the files, so two processes never interleave and lose an
original. The lock is always taken before any SQLite write transaction, never inside one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat as stat_mod
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlite_utils

from imgrank.files import db_path, db_prefix, fs_path


@dataclass
class Record:
    """What the database knows of a file's mtimes."""

    original_ns: int
    set_ns: int | None
    prev_set_ns: int | None
    sha256: str | None = None
    dev: int | None = None  # the file's device and inode when imgrank last set its time
    ino: int | None = None

    def ours(self, mtime_ns: int) -> bool:
        """Is this on-disk time one imgrank set (or the original, not yet touched)?"""
        return mtime_ns in (self.original_ns, self.set_ns, self.prev_set_ns)

    def set_times(self) -> tuple[int, ...]:
        """The imgrank times a file may have now (a move keeps them)."""
        return tuple(t for t in (self.set_ns, self.prev_set_ns) if t is not None)

    def same_file(self, st: os.stat_result) -> bool | None:
        """Is this the file the record was made for (device and inode)? None where not known."""
        if self.ino is None:
            return None
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


# --- the lock --------------------------------------------------------------------------------

_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant within a process
_thread_lock = threading.RLock()


def _lock_path(db: sqlite_utils.Database) -> str:
    main = db.conn.execute("PRAGMA database_list").fetchone()[2]
    return (main or ":memory:") + ".mtimes-lock"


@contextlib.contextmanager
def locked(db: sqlite_utils.Database) -> Iterator[None]:
    """Hold the mtimes lock (waits for another process's order, restore or move to finish)."""
    if db.conn.in_transaction:
        # Waiting for the lock while holding SQLite's write lock could deadlock with a holder
        # of this lock that waits for SQLite's.
        raise RuntimeError("owntimes.locked() must be entered outside any transaction")
    path = _lock_path(db)
    with _thread_lock:
        if path in _held:
            fd, depth = _held[path]
            _held[path] = (fd, depth + 1)
        else:
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            _held[path] = (fd, 1)
        try:
            yield
        finally:
            fd, depth = _held[path]
            if depth == 1:
                del _held[path]
                os.close(fd)  # releases the flock
            else:
                _held[path] = (fd, depth - 1)


def _require_lock(db: sqlite_utils.Database) -> None:
    if _lock_path(db) not in _held:
        raise RuntimeError("hold owntimes.locked(db) around a change of the mtimes records")


# --- records ---------------------------------------------------------------------------------

_COLUMNS = "path, original_ns, set_ns, prev_set_ns, sha256, dev, ino"


def records(db: sqlite_utils.Database, under: Iterable[str] | None = None) -> dict[str, Record]:
    """The records of all touched files, or of those at or under the given absolute paths."""
    sql = f"SELECT {_COLUMNS} FROM mtimes"
    if under is None:
        rows = db.execute(sql).fetchall()
    else:
        rows = []
        for p in under:
            prefix = db_prefix(p)
            rows += db.execute(
                sql + " WHERE path = ? OR substr(path, 1, ?) = ?", [db_path(p), len(prefix), prefix]
            ).fetchall()
    return {fs_path(r[0]): Record(*r[1:]) for r in rows}


def record(db: sqlite_utils.Database, path: str) -> Record | None:
    """The record of one file, if imgrank touched it."""
    row = db.execute(f"SELECT {_COLUMNS} FROM mtimes WHERE path = ?", [db_path(path)]).fetchone()
    return Record(*row[1:]) if row else None


def records_of(db: sqlite_utils.Database, paths: Iterable[str]) -> dict[str, Record]:
    """The records of those of these paths imgrank touched."""
    import json

    rows = db.execute(
        f"SELECT {_COLUMNS} FROM mtimes WHERE path IN (SELECT value FROM json_each(?))",
        [json.dumps([db_path(p) for p in paths])],
    )
    return {fs_path(r[0]): Record(*r[1:]) for r in rows}


def own_times(db: sqlite_utils.Database, paths: Iterable[str]) -> dict[str, tuple[int | None, int | None]]:
    """(set_ns, prev_set_ns) of those paths imgrank touched: times a scan takes as the file's own."""
    return {p: (r.set_ns, r.prev_set_ns) for p, r in records_of(db, paths).items()}


def own_mtimes(
    db: sqlite_utils.Database, seen: dict[str, int], before: dict[str, Record] | None = None
) -> dict[str, int]:
    """For files read with these mtimes ({path: mtime_ns}): the file's own time where the one read
    is a time imgrank set (its recorded original), else the one read. What a row keeps.

    `before` holds the records as they were before the files were read: an order or a restore
    may finish between a read and this call, and a time it set and has since replaced or put
    back is still imgrank's, not the file's (the row would otherwise look changed once the
    original is back, and the photo be read again)."""
    out = dict(seen)
    for records in (before or {}, records_of(db, seen)):
        for path, rec in records.items():
            if path in seen and seen[path] in rec.set_times():
                out[path] = rec.original_ns
    return out


def count(db: sqlite_utils.Database) -> int:
    """How many originals `restore` holds."""
    return db.execute("SELECT count(*) FROM mtimes").fetchone()[0]


def write(db: sqlite_utils.Database, items: list[tuple[str, Record]]) -> None:
    """Store these records (replacing any for the same paths), in one transaction."""
    _require_lock(db)
    now = time.time()
    _write(
        db,
        f"INSERT OR REPLACE INTO mtimes ({_COLUMNS}, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(db_path(p), r.original_ns, r.set_ns, r.prev_set_ns, r.sha256, r.dev, r.ino, now) for p, r in items],
    )


def forget(db: sqlite_utils.Database, paths: list[str]) -> None:
    """Drop the records of these paths (their originals are back, or proved obsolete)."""
    _require_lock(db)
    _write(db, "DELETE FROM mtimes WHERE path = ?", [(db_path(p),) for p in paths])


def _write(db: sqlite_utils.Database, sql: str, params: list[tuple]) -> None:
    """Many writes in one transaction, in key order (SQLite's B-tree work is then sequential: 3× faster)."""
    if not params:
        return
    with db.atomic():
        db.conn.executemany(sql, sorted(params))


def follow(db: sqlite_utils.Database, src: str, dst: str) -> None:
    """A file moved from src to dst: its record goes with it (`restore` finds it there).

    A record at dst belonged to the photo the move replaced: it is set aside (see set_aside), so
    the photo living there now never gets that photo's original. Call under `locked(db)`, inside
    or outside a transaction of the caller's."""
    _require_lock(db)
    there = record(db, dst) if src != dst else None
    if there is not None:
        st, _ = lstat(dst)
        if st is not None and there.same_file(st):
            return  # already the record of the file living there (an order or restore followed it)
        if there.ino is None and record(db, src) is None:
            return  # an old record, nothing to tell it by: kept as before
        set_aside(db, dst, "another file was moved onto it")
    db.execute("UPDATE mtimes SET path = ? WHERE path = ?", [db_path(dst), db_path(src)])


def set_aside(db: sqlite_utils.Database, path: str, why: str) -> None:
    """The photo a record belonged to is gone (another file now lives at its path): keep the record
    apart, reported by `restore` until --forget-missing, and free the path. Call under the lock."""
    _require_lock(db)
    with db.atomic():
        db.execute(
            """INSERT INTO mtimes_gone (path, original_ns, set_ns, sha256, why, at)
               SELECT path, original_ns, set_ns, sha256, ?, ? FROM mtimes WHERE path = ?""",
            [why, time.time(), db_path(path)],
        )
        db.execute("DELETE FROM mtimes WHERE path = ?", [db_path(path)])


def set_apart(db: sqlite_utils.Database) -> list[tuple[str, str]]:
    """(path, why) of the records set aside: photos replaced by another file."""
    return [(fs_path(p), w) for p, w in db.execute("SELECT path, why FROM mtimes_gone ORDER BY id")]


def forget_set_apart(db: sqlite_utils.Database) -> int:
    """Drop the records set aside (`restore --forget-missing`). Returns how many."""
    _require_lock(db)
    return db.execute("DELETE FROM mtimes_gone").rowcount


def follow_content(
    db: sqlite_utils.Database, src: str, candidates: Iterable[tuple[str, int]]
) -> tuple[str, Record] | None:
    """src vanished; `candidates` are (path, indexed mtime_ns) of present files with its content.
    The record follows one that has none of its own and still has imgrank's time (a move keeps
    it; a copy made with a plain `cp` does not): the one with the record's inode if there is one
    (a `cp -p` copy beside the moved file is a new file), else the first. Returns (that path, the
    record), else None.

    Call under `locked(db)`."""
    rec = record(db, src)
    if rec is None:
        return None
    fits = [p for p, mtime_ns in candidates if mtime_ns in rec.set_times() and record(db, p) is None]
    path = pick(rec, fits)
    if path is None:
        return None
    follow(db, src, path)
    return path, rec


def pick(rec: Record, paths: list[str]) -> str | None:
    """Of files with a record's content and imgrank time, the one it belongs to: the one with its
    device and inode (a move within a file system), else the first (a move across file systems;
    the others are copies, new files with their own times)."""
    for p in paths:
        st, _ = lstat(p)
        if st is not None and rec.same_file(st):
            return p
    return paths[0] if paths else None


# --- files -----------------------------------------------------------------------------------


VANISHED = "vanished"
CHANGED = "changed while imgrank was ordering it: not touched (its new time is its own)"


def lstat(path: str) -> tuple[os.stat_result | None, str | None]:
    """The file's own stat (a symlink is never followed), or why it cannot be touched."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return None, VANISHED if isinstance(e, FileNotFoundError) else (e.strerror or str(e))
    if not stat_mod.S_ISREG(st.st_mode):
        return None, "not a regular file any more"
    return st, None


class Toucher:
    """Sets photos' mtimes (the only `os.utime` on a photo), never through a symlink.

    Each file is touched relative to a descriptor of its folder, opened without following a
    symlink at the last step and checked to be the folder the path names: a folder on the way
    swapped for a symlink (to somewhere outside the roots) is refused, whatever it points to.
    Files come in path order, so one folder descriptor serves all its files.
    """

    def __init__(self) -> None:
        self._folder: str | None = None
        self._fd: int | None = None
        self._why: str | None = None
        self.held_ns: int | None = None  # the time the last touch left, as the file system holds it
        self._looked: list = []  # [path, descriptor] that look() left open

    def __enter__(self) -> Toucher:
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        self._drop_looked()
        if self._fd is not None:
            os.close(self._fd)
        self._folder = self._fd = self._why = None

    def _open_folder(self, folder: str) -> None:
        self._close()
        self._folder = folder
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._why = VANISHED  # its folder is gone, and it with it
            return
        except OSError as e:
            if os.path.islink(folder):
                self._why = f"its folder is a symlink now (to {os.path.realpath(folder)}): not touched"
            else:
                self._why = e.strerror or str(e)
            return
        real = _real_path(fd, folder)
        if real != folder:
            os.close(fd)
            self._why = f"a folder on its path is a symlink now (to {real}): not touched"
            return
        self._fd = fd

    def touch(
        self, path: str, atime_ns: int, mtime_ns: int, read: os.stat_result | None = None
    ) -> str | None:
        """Set the mtime, keep the atime; the reason on failure (VANISHED, CHANGED, or the OS's).

        With `read` (the stat the caller planned from), the file is checked just before the touch,
        through the descriptor the touch goes through: one written, replaced or given another
        time since is left alone (CHANGED), so the owner's edit wins. Right after `look(path)` that
        stat, read through the descriptor the touch goes through, is the check. `held_ns` is then
        the time the file system holds, read back after the touch (a coarse one keeps less)."""
        self.held_ns = None
        looked, check = self._looked, read is not None
        if looked and looked[0] == path:  # look() just read it through this descriptor
            fd, check, self._looked = looked[1], False, []
        else:
            fd, name, why = self._open_file(path)
            if fd is None:
                return why if why is not None else self._touch_by_name(name, atime_ns, mtime_ns, read)
        try:
            if check and _moved(os.fstat(fd), read):
                return CHANGED
            os.utime(fd, ns=(atime_ns, mtime_ns))
            self.held_ns = os.fstat(fd).st_mtime_ns
        except OSError as e:
            return e.strerror or str(e)
        finally:
            os.close(fd)
        return None

    def look(self, path: str) -> tuple[os.stat_result | None, str | None]:
        """The file's stat read through the descriptor a `touch` of it right after goes through
        (held open until then), or why it cannot be touched (as `lstat` says, or its folder's)."""
        fd, name, why = self._open_file(path)
        if fd is None:  # a symlink, or not readable by us (touch checks it by name), or why not
            return lstat(path) if why is None else (None, why)
        self._looked = [path, fd]
        st = os.fstat(fd)  # an error here (EIO) is the caller's, as lstat's would have been
        return (st, None) if stat_mod.S_ISREG(st.st_mode) else (None, "not a regular file any more")

    def _open_file(self, path: str) -> tuple[int | None, str, str | None]:
        """(descriptor, name, None); (None, name, why) where it cannot be touched; (None, name,
        None) where it cannot be opened but may be touched by name (not readable by us)."""
        if self._looked:
            self._drop_looked()
        folder, _, name = path.rpartition(os.sep)  # os.path.split's result for an absolute path, faster
        if folder != self._folder:
            self._open_folder(folder)
        if self._fd is None:
            return None, name, self._why
        try:
            return os.open(name, _OPEN_FLAGS, dir_fd=self._fd), name, None
        except FileNotFoundError:
            return None, name, VANISHED
        except OSError:
            return None, name, None

    def _drop_looked(self) -> None:
        if self._looked:
            os.close(self._looked[1])
            self._looked = []

    def _touch_by_name(
        self, name: str, atime_ns: int, mtime_ns: int, read: os.stat_result | None
    ) -> str | None:
        try:
            if read is not None and _moved(os.stat(name, dir_fd=self._fd, follow_symlinks=False), read):
                return CHANGED
            os.utime(name, ns=(atime_ns, mtime_ns), dir_fd=self._fd, follow_symlinks=False)
            self.held_ns = os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            return VANISHED
        except OSError as e:
            return e.strerror or str(e)
        return None


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block


def _moved(now: os.stat_result, read: os.stat_result) -> bool:
    """Did the file change between the stat `read` and `now` (written, replaced, time set)?"""
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
        read.st_dev, read.st_ino, read.st_size, read.st_mtime_ns, read.st_ctime_ns
    )  # fmt: skip


def _real_path(fd: int, fallback: str) -> str:
    """Where an open folder really is (its path with every symlink resolved)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)
