"""The `sidecars` table: each XMP sidecar imgrank wrote, with its original bytes (or that there was
none) and mtime, and the hashes of what imgrank wrote. imgrank/sidecars.py decides; this runs its SQL.

Paths go in and come out as ordinary `str` paths (stored in imgrank.files' db_path form)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgrank.files import db_path, fs_path
from imgrank.store.where import at_or_under

if TYPE_CHECKING:
    import sqlite_utils


@dataclass
class Original:
    photo: str
    original: bytes | None  # None: imgrank created the sidecar
    mtime_ns: int | None  # the original's mtime (programs compare it with their own records)
    written_sha256: str | None  # what imgrank wrote last
    prev_sha256: str | None  # what the sidecar held just before (until that write is done)


_SELECT = "SELECT path, photo, original, existed, mtime_ns, written_sha256, prev_sha256 FROM sidecars"


def originals(db: sqlite_utils.Database, under: Iterable[str] | None = None) -> dict[str, Original]:
    """The recorded sidecars by path (all, or those of photos at or under the given absolute paths,
    and those paths' own records)."""
    if under is None:
        rows = db.execute(_SELECT).fetchall()
    else:
        rows = []
        for p in under:
            where, params = at_or_under("photo", p)
            rows += db.execute(f"{_SELECT} WHERE {where} OR path = ?", [*params, db_path(p)]).fetchall()
    return {fs_path(r[0]): Original(fs_path(r[1]), r[2] if r[3] else None, *r[4:]) for r in rows}


def count(db: sqlite_utils.Database) -> int:
    """How many sidecars `restore` holds the originals of."""
    return db.execute("SELECT count(*) FROM sidecars").fetchone()[0]


def recorded(db: sqlite_utils.Database) -> set[str]:
    """The paths of the recorded sidecars."""
    return {fs_path(p) for (p,) in db.execute("SELECT path FROM sidecars")}


def remember(
    db: sqlite_utils.Database, path: str, photo: str, original: bytes | None, mtime_ns: int | None
) -> None:
    """Record a sidecar's original bytes (None: there was no file) and mtime; a record kept from an
    earlier write stays as it is."""
    db.execute(
        "INSERT OR IGNORE INTO sidecars (path, photo, original, existed, mtime_ns, at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [db_path(path), db_path(photo), original, int(original is not None), mtime_ns, time.time()],
    )


def about_to_write(
    db: sqlite_utils.Database, path: str, prev_sha256: str | None, written_sha256: str | None
) -> None:
    """The hashes of what a sidecar holds now and of what imgrank is about to write into it."""
    db.execute(
        "UPDATE sidecars SET prev_sha256 = ?, written_sha256 = ? WHERE path = ?",
        [prev_sha256, written_sha256, db_path(path)],
    )


def forget(db: sqlite_utils.Database, paths: list[str]) -> None:
    """Drop the records of these sidecars (put back as they were)."""
    db.conn.executemany("DELETE FROM sidecars WHERE path = ?", [(db_path(p),) for p in paths])
