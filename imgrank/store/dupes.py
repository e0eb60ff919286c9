"""The `dupe_groups` table: every grouped photo (by content) with its group's id, and every other
photo looked at with none (NULL). imgrank/dupes.py forms the groups; this runs its SQL."""

from __future__ import annotations

from collections.abc import Iterable


def stored(db) -> dict[str, int | None]:
    """sha256 -> group id (None: looked at, in no group) of every photo of the stored grouping."""
    return dict(db.execute("SELECT sha256, group_id FROM dupe_groups").fetchall())


def groups(db) -> dict[str, int]:
    """sha256 -> group id of the grouped photos only."""
    return dict(db.execute("SELECT sha256, group_id FROM dupe_groups WHERE group_id IS NOT NULL").fetchall())


def replace(db, rows: Iterable[tuple[str, int | None]]) -> None:
    """Store these (sha256, group id) rows in place of all the others."""
    db.execute("DELETE FROM dupe_groups")
    add(db, rows)


def add(db, rows: Iterable[tuple[str, int | None]]) -> None:
    """Store these (sha256, group id) rows (photos not stored yet)."""
    db.conn.executemany("INSERT INTO dupe_groups (sha256, group_id) VALUES (?, ?)", rows)


def forget(db, shas: Iterable[str]) -> None:
    """Drop the rows of these contents."""
    db.conn.executemany("DELETE FROM dupe_groups WHERE sha256 = ?", [(s,) for s in shas])
