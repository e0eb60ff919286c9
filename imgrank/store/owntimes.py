"""imgrank's own times: the `mtimes` table, its lock, and the one place that sets a photo's time.

Each record holds a touched file's original mtime (kept across later orders), the time imgrank
set last, the imgrank time before that until its touch is done, and the file's content hash (to
find it again after a move nobody scanned). Only this module runs SQL on `mtimes`, and only its
`Toucher` (store/touch.py) calls `os.utime` on a photo.

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
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlite_utils

from imgrank.files import db_path, fs_path
from imgrank.store.touch import CHANGED as CHANGED  # the touch itself (store/touch.py), re-exported
from imgrank.store.touch import VANISHED as VANISHED
from imgrank.store.touch import Toucher as Toucher
from imgrank.store.touch import lstat as lstat
from imgrank.store.where import at_or_under


@dataclass
class Record:
    """What the database knows of a file's mtimes."""

    original_ns: int
    set_ns: int | None
    prev_set_ns: int | None
    sha256: str | None = None
    dev: int | None = None  # the file's device and inode when imgrank last set its time
    ino: int | None = None
    earlier: tuple[int, ...] = ()  # imgrank times set before those two, newest first (EARLIER)

    def ours(self, mtime_ns: int) -> bool:
        """Is this on-disk time one imgrank set (or the original, not yet touched)?"""
        return mtime_ns == self.original_ns or mtime_ns in self.set_times()

    def set_times(self) -> tuple[int, ...]:
        """The imgrank times a file or a copy of it may have now (a move and `cp -p` keep them)."""
        return tuple(t for t in (self.set_ns, self.prev_set_ns) if t is not None) + self.earlier

    def history(self, *but: int | None) -> tuple[int, ...]:
        """`earlier` for the record that sets a new time after these: the times set before but
        those (the new one, the one before it), newest first, at most EARLIER."""
        return tuple(dict.fromkeys(t for t in self.set_times() if t not in but))[:EARLIER]

    def same_file(self, st: os.stat_result) -> bool | None:
        """Is this the file the record was made for (device and inode)? None where not known."""
        if self.ino is None:
            return None
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


# How many of the imgrank times set before the last two a record keeps. A copy made with its times
# (`cp -p a b`, a file manager's move across disks) holds the time a had then; when a is removed
# later, after orders touched it again (and a restore maybe gave it back), that time still tells b
# for photo a (identities). Eight orders of one photo between the copy and the rm are plenty.
EARLIER = 8


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

_COLUMNS = "path, original_ns, set_ns, prev_set_ns, sha256, dev, ino, earlier"
_VALUES = ", ".join("?" * (_COLUMNS.count(",") + 2))  # the columns and `at`


def _record(row: tuple) -> Record:
    """A Record from a row of _COLUMNS but the path (earlier is a JSON list of integers, or NULL;
    read and written by hand, three times faster than json for a restore of 30,000 records)."""
    *head, earlier = row
    return Record(*head, earlier=tuple(map(int, earlier[1:-1].split(","))) if earlier else ())


def _row(path: str, r: Record, at: float) -> tuple:
    """The row of _COLUMNS and `at` for a record."""
    earlier = "[" + ",".join(map(str, r.earlier)) + "]" if r.earlier else None
    return (db_path(path), r.original_ns, r.set_ns, r.prev_set_ns, r.sha256, r.dev, r.ino, earlier, at)


def records(db: sqlite_utils.Database, under: Iterable[str] | None = None) -> dict[str, Record]:
    """The records of all touched files, or of those at or under the given absolute paths."""
    sql = f"SELECT {_COLUMNS} FROM mtimes"
    if under is None:
        rows = db.execute(sql).fetchall()
    else:
        rows = []
        for p in under:
            where, params = at_or_under("path", p)
            rows += db.execute(f"{sql} WHERE {where}", params).fetchall()
    return {fs_path(r[0]): _record(r[1:]) for r in rows}


def record(db: sqlite_utils.Database, path: str) -> Record | None:
    """The record of one file, if imgrank touched it."""
    row = db.execute(f"SELECT {_COLUMNS} FROM mtimes WHERE path = ?", [db_path(path)]).fetchone()
    return _record(row[1:]) if row else None


def records_of(db: sqlite_utils.Database, paths: Iterable[str]) -> dict[str, Record]:
    """The records of those of these paths imgrank touched."""
    return {fs_path(r[0]): _record(r[1:]) for r in _of_paths(db, f"SELECT {_COLUMNS} FROM mtimes", paths)}


def _of_paths(db: sqlite_utils.Database, sql: str, paths: Iterable[str]) -> list[tuple]:
    where = " WHERE path IN (SELECT value FROM json_each(?))"
    return db.execute(sql + where, [json.dumps([db_path(p) for p in paths])]).fetchall()


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
        f"INSERT OR REPLACE INTO mtimes ({_COLUMNS}, at) VALUES ({_VALUES})",
        [_row(p, r, now) for p, r in items],
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


# --- records of originals given back ---------------------------------------------------------

# How long the record of a file given its original back is kept (in `mtimes_given_back`). A copy
# made while the file held imgrank's time (a move across disks by copy and delete, rsync
# --remove-source-files) still holds that time after the restore; once its source is gone it is
# that photo, moved, and takes the original (identities.settle, take_over_copies, order.restore).
# A day covers the move of a whole library; the table holds at most what was given back that day.
GIVEN_BACK_S = 86_400


def put_back(db: sqlite_utils.Database, items: list[tuple[str, Record]]) -> None:
    """These files have their originals back: their records go, kept GIVEN_BACK_S among those
    given back (see `given_back`)."""
    _require_lock(db)
    if not items:
        return
    now = time.time()
    rows = sorted(_row(p, r, now) for p, r in items)
    with db.atomic():
        db.conn.executemany(
            f"INSERT OR REPLACE INTO mtimes_given_back ({_COLUMNS}, at) VALUES ({_VALUES})",
            [r for r in rows if r[4] is not None],  # without its content no copy can be told for it
        )
        db.conn.executemany("DELETE FROM mtimes WHERE path = ?", [r[:1] for r in rows])
        db.execute("DELETE FROM mtimes_given_back WHERE at < ?", [now - GIVEN_BACK_S])


def given_back(
    db: sqlite_utils.Database,
    times: Iterable[int] | None = None,
    paths: Iterable[str] | None = None,
    contents: Iterable[str] | None = None,
) -> dict[str, Record]:
    """The records of files given their original back lately (`put_back`) whose imgrank times are
    among `times`, or of these `paths`, or with these `contents`, or all, by the path they had."""
    if db.execute("SELECT 1 FROM mtimes_given_back LIMIT 1").fetchone() is None:
        return {}  # none (nearly always): no list of times or paths to send
    sql = f"SELECT {_COLUMNS} FROM mtimes_given_back"
    if times is None and paths is None and contents is None:
        rows = db.execute(sql).fetchall()
    elif paths is not None:
        rows = _of_paths(db, sql, paths)
    elif contents is not None:
        where = " WHERE sha256 IN (SELECT value FROM json_each(?))"
        rows = db.execute(sql + where, [json.dumps(sorted(set(contents)))]).fetchall()
    else:
        rows = db.execute(
            f"""{sql} WHERE set_ns IN (SELECT value FROM json_each(:t))
                OR prev_set_ns IN (SELECT value FROM json_each(:t))
                OR EXISTS (SELECT 1 FROM json_each(earlier) e
                           WHERE e.value IN (SELECT value FROM json_each(:t)))""",
            {"t": json.dumps(sorted(set(times)))},
        ).fetchall()
    return {fs_path(r[0]): _record(r[1:]) for r in rows}


def forget_given_back(db: sqlite_utils.Database, paths: list[str] | None = None) -> None:
    """Drop these records given back (all if None): another file took the original, or the owner
    said to forget what is missing (`restore --forget-missing`)."""
    _require_lock(db)
    if paths is None:
        db.execute("DELETE FROM mtimes_given_back")
    else:
        _write(db, "DELETE FROM mtimes_given_back WHERE path = ?", [(db_path(p),) for p in paths])


def given_back_paths(db: sqlite_utils.Database) -> list[str]:
    """The paths of the files given their original back lately."""
    return [fs_path(r[0]) for r in db.execute("SELECT path FROM mtimes_given_back")]


def reclaim(db: sqlite_utils.Database, old: str, new: str) -> None:
    """The file at `new` (no record of its own) is the photo given back at `old`, which is gone: it
    was copied before the restore and its source removed after. Its kept record becomes new's, as
    `follow` would have carried it. Call under `locked(db)`."""
    _require_lock(db)
    with db.atomic():
        db.execute(
            f"""INSERT INTO mtimes ({_COLUMNS}, at) SELECT ?, original_ns, set_ns, prev_set_ns, sha256,
                dev, ino, earlier, ? FROM mtimes_given_back WHERE path = ?""",
            [db_path(new), time.time(), db_path(old)],
        )
        db.execute("DELETE FROM mtimes_given_back WHERE path = ?", [db_path(old)])


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
