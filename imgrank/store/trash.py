"""The `trash` table: each photo imgrank moved to the desktop Trash (its batch, path, content, where
in the Trash it went, when) and when it was put back. imgrank/trash.py moves; this runs its SQL.

Paths go in and come out as ordinary `str` paths (stored in imgrank.files' db_path form)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import NamedTuple

from imgrank.files import db_path, fs_path
from imgrank.store.db import IN_JSON


class Moved(NamedTuple):
    """A move not undone: the row's id, where the photo was, and where it went in the Trash (the
    file and its .trashinfo; None where that is not known)."""

    id: int
    path: str
    trashed: str | None
    info: str | None


def last_batch(db) -> int | None:
    """The number of the last batch, None before the first."""
    return db.execute("SELECT max(batch) FROM trash").fetchone()[0]


def log(db, batch: int, path: str, sha256: str | None, trashed: str | None, info: str | None) -> None:
    """Record one move (at the time of the call)."""
    db.execute(
        "INSERT INTO trash (batch, path, sha256, trashed, info, at) VALUES (?, ?, ?, ?, ?, ?)",
        [batch, db_path(path), sha256, *(db_path(w) if w else None for w in (trashed, info)), time.time()],
    )


def last_open_batch(db) -> int | None:
    """The last batch with moves not undone, if any."""
    return db.execute("SELECT max(batch) FROM trash WHERE undone_at IS NULL").fetchone()[0]


def open_moves(db, batch: int) -> list[Moved]:
    """The moves of `batch` not undone."""
    sql = "SELECT id, path, trashed, info FROM trash WHERE batch = ? AND undone_at IS NULL"
    return [
        Moved(rid, fs_path(path), *(None if w is None else fs_path(w) for w in (trashed, info)))
        for rid, path, trashed, info in db.execute(sql, [batch]).fetchall()
    ]


def undone(db, move_id: int) -> None:
    """A move was put back (now)."""
    db.execute("UPDATE trash SET undone_at = ? WHERE id = ?", [time.time(), move_id])


def moved_since(db, paths: Iterable[str], since: float) -> set[str]:
    """Of these paths, those moved to the Trash after the time `since` and not put back."""
    found = db.execute(
        f"SELECT path FROM trash WHERE undone_at IS NULL AND at > ? AND path IN {IN_JSON}",
        [since, json.dumps([db_path(p) for p in paths])],
    )
    return {fs_path(r[0]) for r in found}
