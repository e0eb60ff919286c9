"""The one rule for "is this file as indexed?": `needs` for one file, `needs_work` for many. It reads
the rows (store/rows.py), imgrank's own times (store/owntimes.py) and which contents have vectors
(store/vectors.py); change when a file is re-read here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Iterable

import sqlite_utils

from imgrank.files import readable_now
from imgrank.store import owntimes, vectors
from imgrank.store.rows import FileRow, rows


def unchanged(
    size: int | None, mtime_ns: int | None, set_ns: int | None, prev_set_ns: int | None, st
) -> bool:
    """Same size, and the mtime indexed or one imgrank set itself: the file needs no read."""
    return st.st_size == size and st.st_mtime_ns in (mtime_ns, set_ns, prev_set_ns)


def own_times(db: sqlite_utils.Database, paths: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """(set_ns, prev_set_ns) of the paths imgrank ordered: times a scan takes as the file's own."""
    return owntimes.own_times(db, paths)


def needs(
    row: FileRow | None, own: tuple | None, st: os.stat_result, embedded: set[str] | None, retry: bool = False
) -> bool:
    """The one rule: does a file whose stat is `st` need reading? See needs_work. An unreadable file
    is read again when it changed, when imgrank failed on it (`ours`), or with `retry`."""
    if row is None or row.state == "missing":
        return True
    if not unchanged(row.size, row.mtime_ns, *(own or (None, None)), st):
        return True
    if row.state == "unreadable":
        # imgrank's own failure, asked to retry, or skipped for want of an extra that is installed now
        return row.ours or retry or readable_now(row.reason)
    if embedded is None:
        return False
    return row.sha256 not in embedded


def needs_work(db: sqlite_utils.Database, paths: Iterable[str], model: str | None = None) -> set[str]:
    """Of these paths, those that must be read: not indexed, marked missing, or changed on disk
    (other size, or an mtime that is neither the indexed one nor one imgrank set); with `model`,
    also those whose content has no vector of that model. A path that cannot be stat'ed is left
    out: there is nothing to read."""
    paths = list(paths)
    known = {}
    own = {}
    for i in range(0, len(paths), 10_000):
        chunk = paths[i : i + 10_000]
        known.update(rows(db, chunk))
        own.update(own_times(db, chunk))
    embedded = None
    if model is not None:
        embedded = vectors.embedded(db, model, {r.sha256 for r in known.values() if r.sha256})
    out = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if needs(known.get(p), own.get(p), st, embedded):
            out.add(p)
    return out
