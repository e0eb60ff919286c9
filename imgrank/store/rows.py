"""The `files` and `roots` tables: their owner, the only module that runs SQL on them.

Paths are stored in their reversible text form (files.db_path) and handed out as ordinary `str`
paths (files.fs_path), so a name that is not UTF-8 is a photo like any other. Rows come back as
typed tuples (FileRow, ContentFacts). `needs_work` is the one rule for "is this file as indexed?".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import sqlite_utils

from imgrank.errors import ImgrankError
from imgrank.files import db_path, db_prefix, display_name, fs_path, under
from imgrank.store import db as dbm
from imgrank.store import owntimes, vectors
from imgrank.store.db import IN_JSON

# --- roots ---------------------------------------------------------------------------------


def _checked_root(p: Path | str) -> Path:
    """A folder to register as a root, absolute and resolved; refuses '' and what is not a folder."""
    if not os.fspath(p).strip():
        raise ImgrankError("an empty path is not a photo folder (give one, e.g. ~/Pictures)")
    path = Path(p).expanduser().resolve()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise ImgrankError(f"{display_name(p)} {what}: a root must be a folder")
    return path


def add_roots(db: sqlite_utils.Database, paths: Iterable[Path | str]) -> list[Path]:
    """Register photo folders (stored, so later runs need none). Returns them resolved."""
    added = [_checked_root(p) for p in paths]  # all checked before any is stored
    new = False
    for path in added:
        cur = db.execute(
            "INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)", [db_path(path), time.time()]
        )
        new = new or cur.rowcount > 0
    if new:
        _assign_roots(db)
    return added


def list_roots(db: sqlite_utils.Database) -> list[Path]:
    return [Path(fs_path(r[0])) for r in db.execute("SELECT path FROM roots ORDER BY path").fetchall()]


def remove_root(db: sqlite_utils.Database, path: Path | str) -> Path:
    """Forget a photo folder: its files leave the ranking; their vectors, labels and the originals
    of any mtimes imgrank set stay (adding the folder again costs no re-embedding)."""
    wanted = {os.path.abspath(os.path.expanduser(os.fspath(path))), str(Path(path).expanduser().resolve())}
    for root in list_roots(db):
        if str(root) in wanted:
            with db.atomic():
                _assign_roots(db, without=db_path(root))  # its rows first: they refer to it
                db.execute("DELETE FROM roots WHERE path = ?", [db_path(root)])
            return root
    raise ImgrankError(f"{display_name(path)} is not a root (see `imgrank roots list`)")


def present_files(db: sqlite_utils.Database) -> list[tuple[str, str]]:
    """(path, sha256) of every present, readable image under the roots."""
    # `+state`: a scan of files beats the state index, which nearly every row matches.
    found = db.execute("SELECT path, sha256 FROM files WHERE +state = 'ok' AND root_id IS NOT NULL")
    return [(fs_path(p), sha) for p, sha in found]


def _root_id(db: sqlite_utils.Database, path: Path | str) -> int | None:
    """The id of the innermost root `path` is under, if any."""
    best = None
    for rid, root in db.execute("SELECT id, path FROM roots").fetchall():
        root = fs_path(root)
        if under(path, root) and (best is None or len(root) > len(best[1])):
            best = (rid, root)
    return best[0] if best else None


def _assign_roots(db: sqlite_utils.Database, without: str | None = None) -> None:
    """Give every row the root it is under now (NULL when none: out of the ranking)."""
    found = db.execute("SELECT id, path FROM roots WHERE path IS NOT ?", [without])
    roots = [(rid, fs_path(p)) for rid, p in found]
    roots.sort(key=lambda r: len(r[1]), reverse=True)  # innermost first
    changes = []
    for fid, p, old in db.execute("SELECT id, path, root_id FROM files").fetchall():
        path = fs_path(p)
        rid = next((r for r, root in roots if under(path, root)), None)
        if rid != old:
            changes.append((rid, fid))
    with db.atomic():
        db.conn.executemany("UPDATE files SET root_id = ? WHERE id = ?", changes)


# --- identity -------------------------------------------------------------------------------


class FileRow(NamedTuple):
    """What the store knows of one path."""

    path: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    state: str  # ok | missing | unreadable
    reason: str | None
    width: int | None
    height: int | None
    ours: bool = False  # unreadable through imgrank's failure, not the file's own: read again


class ContentFacts(NamedTuple):
    """Facts of one content (not of one of its paths): a copy or a move never changes them."""

    path: str  # the name the head sees: of its first-seen present file
    width: int | None
    height: int | None
    size: int | None


_ROW = "path, sha256, size, mtime_ns, state, reason, width, height, ours"


def _row(r: tuple) -> FileRow:
    return FileRow(fs_path(r[0]), *r[1:-1], bool(r[-1]))


def rows(db: sqlite_utils.Database, paths: Iterable[str] | None = None) -> dict[str, FileRow]:
    """Rows by path: all, or of these paths (those the store has)."""
    if paths is None:
        found = db.execute(f"SELECT {_ROW} FROM files")
    else:
        keys = [db_path(p) for p in paths]
        found = db.execute(f"SELECT {_ROW} FROM files WHERE path IN {IN_JSON}", [json.dumps(keys)])
    return {r.path: r for r in map(_row, found)}


def content_facts(db: sqlite_utils.Database, shas: Iterable[str] | None = None) -> dict[str, ContentFacts]:
    """Per content hash: the name of its first-seen present file (else its most recently seen
    one) and the content's size and pixel size, taken from whichever row recorded them."""
    sql = "SELECT sha256, path, width, height, size, state, first_seen, last_seen, id FROM files"
    if shas is None:
        found = db.execute(sql + " WHERE sha256 IS NOT NULL")
    else:
        found = db.execute(sql + f" WHERE sha256 IN {IN_JSON}", [json.dumps(list(shas))])
    best: dict[str, tuple] = {}
    dims: dict[str, list] = {}
    for sha, path, width, height, size, state, first, last, fid in found:
        rank = (0, first or 0, fid) if state == "ok" else (1, -(last or 0), fid)
        if sha not in best or rank < best[sha][0]:
            best[sha] = (rank, path)
        d = dims.setdefault(sha, [None, None, None])
        if width is not None and height is not None and d[0] is None:
            d[0], d[1] = width, height
        if size is not None and d[2] is None:
            d[2] = size
    return {sha: ContentFacts(fs_path(best[sha][1]), *dims[sha]) for sha in best}


# --- what a scan writes -------------------------------------------------------------------------


def write_rows(
    db: sqlite_utils.Database, results: list[dict], before: dict[str, owntimes.Record] | None = None
) -> None:
    """Insert or update the rows of files just read (see workers.read_one). Call in a transaction.

    A file read while it had a time imgrank set keeps its own time in its row (the original), as
    after a move: so once `restore` puts the original back the file is still as indexed, and a
    relabel or scan next to an order or restore does not see a change that is imgrank's own.
    `before`: the mtimes records taken before the reads (owntimes.records_of), see own_mtimes."""
    now = time.time()
    seen = {r["path"]: r["mtime_ns"] for r in results if r["mtime_ns"] is not None}
    own = owntimes.own_mtimes(db, seen, before)
    for r in results:
        _write_row(db, {**r, "mtime_ns": own.get(r["path"], r["mtime_ns"])}, now)


def _write_row(db: sqlite_utils.Database, r: dict, now: float) -> None:
    """Insert or update a path's row. Width and height belong to the content: a row for content
    that was not decoded (a copy, a move) takes them from a row of the same content."""
    reason = r.get("reason")
    state = "unreadable" if reason else "ok"
    db.execute(
        """INSERT INTO files (path, root_id, size, mtime_ns, sha256, state, reason, width, height,
                              first_seen, last_seen, ours)
           VALUES (:path, :root_id, :size, :mtime_ns, :sha256, :state, :reason, :width, :height, :now, :now,
                   :ours)
           ON CONFLICT(path) DO UPDATE SET root_id = :root_id, size = :size, mtime_ns = :mtime_ns,
               sha256 = coalesce(:sha256, sha256), state = :state, reason = :reason,
               width = :width, height = :height, last_seen = :now, ours = :ours""",
        {
            "path": db_path(r["path"]), "root_id": _root_id(db, r["path"]), "size": r["size"],
            "mtime_ns": r["mtime_ns"], "sha256": r["sha256"], "state": state, "reason": reason,
            "width": r.get("width"), "height": r.get("height"), "now": now, "ours": int(bool(r.get("ours"))),
        },
    )  # fmt: skip
    if r["sha256"] and r.get("width") is None:
        db.execute(
            """UPDATE files SET (width, height) = (SELECT width, height FROM files
                   WHERE sha256 = :sha AND width IS NOT NULL AND height IS NOT NULL LIMIT 1)
               WHERE path = :path""",
            {"sha": r["sha256"], "path": db_path(r["path"])},
        )


def missing_contents(db: sqlite_utils.Database) -> set[str]:
    """Content hashes of the rows marked missing (a new path with one of them is a move)."""
    return {r[0] for r in db.execute("SELECT sha256 FROM files WHERE state = 'missing'")}


def count_present(db: sqlite_utils.Database) -> int:
    """How many files are present and readable."""
    return db.execute("SELECT count(*) FROM files WHERE state = 'ok'").fetchone()[0]


def mark_all_missing(db: sqlite_utils.Database, paths: list[str]) -> None:
    """These files vanished: their rows stay (with vectors and labels), marked missing."""
    with db.atomic():
        db.execute(
            f"UPDATE files SET state = 'missing', last_seen = ? WHERE path IN {IN_JSON}",
            [time.time(), json.dumps([db_path(p) for p in paths])],
        )


def settle_moves(db: sqlite_utils.Database, forget: Callable[[list[str]], None]) -> set[str]:
    """A vanished path whose content is present at another path was moved, not lost: its row goes
    (the vectors and labels stay with the content), the record of its original mtime follows it,
    and it is scored again under its new name (a feature): `forget(hashes)`, in the same transaction,
    drops their scores (scores.forget_scores, passed in by the indexing service). Returns the
    paths moved from."""
    # Under the mtimes lock: a record that follows its file must not cross an order or a restore.
    with owntimes.locked(db), db.atomic():
        moved = db.execute(
            """DELETE FROM files WHERE state = 'missing' AND sha256 IN
               (SELECT sha256 FROM files WHERE state = 'ok') RETURNING path, sha256"""
        ).fetchall()
        _own_times_follow(db, moved)
        forget([sha for _, sha in moved])
    return {fs_path(p) for p, _ in moved}


# --- single paths, the daemon's events, reports ----------------------------------------------------


def count_with_reason(db: sqlite_utils.Database, reason: str) -> int:
    """How many files are unreadable for exactly this reason."""
    return db.execute("SELECT count(*) FROM files WHERE reason = ?", [reason]).fetchone()[0]


def mark_missing(db: sqlite_utils.Database, path: Path | str, since: float | None = None) -> str | None:
    """A file vanished: keep its row, vectors and labels. Returns its content hash, if known.

    With `since` (a time.time() when the file was seen to go), a row a scan marked missing at or
    after that time counts too: the scan got there first, but the file was present until then."""
    key = db_path(path)
    row = db.execute("SELECT sha256, state, last_seen FROM files WHERE path = ?", [key]).fetchone()
    if row is None:
        return None
    sha, state, last_seen = row
    if state == "missing":
        return sha if since is not None and (last_seen or 0) >= since else None
    db.execute("UPDATE files SET state = 'missing', last_seen = ? WHERE path = ?", [time.time(), key])
    return sha


def present_under(db: sqlite_utils.Database, folder: Path | str) -> list[str]:
    """Paths of indexed files under `folder` that are not missing."""
    prefix = db_prefix(folder)
    sql = "SELECT path FROM files WHERE state != 'missing' AND substr(path, 1, ?) = ?"
    return [fs_path(r[0]) for r in db.execute(sql, [len(prefix), prefix])]


def drop_if_moved(db: sqlite_utils.Database, path: Path | str, sha: str) -> bool:
    """A vanished path whose content is present at another path was moved (or was one of two
    copies), not lost: its row goes, vectors and labels stay with the content. True if so."""
    if db.execute("SELECT 1 FROM files WHERE sha256 = ? AND state = 'ok'", [sha]).fetchone() is None:
        return False
    db.execute("DELETE FROM files WHERE path = ?", [db_path(path)])
    return True


def move_path(
    db: sqlite_utils.Database, src: Path | str, dst: Path | str, forget: Callable[[list[str]], None]
) -> bool:
    """A rename seen as it happened: the row (and so its vectors and labels) follows the file;
    `forget(hashes)` (scores.forget_scores), in the same transaction, drops the photo's score."""
    try:
        st = os.stat(dst)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:  # already moved on again: the row follows now, the next rename carries it on
        size = mtime_ns = None
    root_id = _root_id(db, dst)
    with owntimes.locked(db), db.atomic():
        if db.execute("SELECT 1 FROM files WHERE path = ?", [db_path(src)]).fetchone() is None:
            return False
        own = owntimes.record(db, os.fspath(src))
        if own and mtime_ns in own.set_times():
            mtime_ns = None  # a rename keeps imgrank's time: the indexed one stays the file's own
        db.execute("DELETE FROM files WHERE path = ?", [db_path(dst)])
        db.execute(
            """UPDATE files SET path = ?, root_id = ?, size = coalesce(?, size),
               mtime_ns = coalesce(?, mtime_ns), last_seen = ? WHERE path = ?""",
            [db_path(dst), root_id, size, mtime_ns, time.time(), db_path(src)],
        )
        owntimes.follow(db, os.fspath(src), os.fspath(dst))
        # The file name is one of the head's features: the photo is scored again under its new one.
        row = db.execute("SELECT sha256 FROM files WHERE path = ?", [db_path(dst)]).fetchone()
        forget([row[0]] if row and row[0] else [])
    return True


def follow_moved(db: sqlite_utils.Database, path: Path | str, sha: str) -> None:
    """A photo the daemon saw go turned up at another path with its content (a move to another root
    or file system is a deletion and an arrival): the record of its original mtime follows it.
    Call under owntimes.locked(db)."""
    _own_times_follow(db, [(db_path(path), sha)])


def _own_times_follow(db: sqlite_utils.Database, moved: list[tuple[str, str]]) -> None:
    """A file imgrank had ordered turned up at a new path (found by its content and its imgrank
    time, which a move keeps): its record goes with it, and its row gets its own time back."""
    for src, sha in moved:
        present = db.execute(
            "SELECT path, mtime_ns FROM files WHERE sha256 = ? AND state = 'ok'", [sha]
        ).fetchall()
        followed = owntimes.follow_content(db, fs_path(src), [(fs_path(p), t) for p, t in present])
        if followed is not None:
            dst, rec = followed
            db.execute("UPDATE files SET mtime_ns = ? WHERE path = ?", [rec.original_ns, db_path(dst)])


def status(db: sqlite_utils.Database) -> dict:
    """What the store holds: roots, images by state, embedded, unreadable, size, model."""
    model = dbm.get_setting(db, "embed_model")
    states = dict(db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())
    present = {r[0] for r in db.execute("SELECT DISTINCT sha256 FROM files WHERE state = 'ok'")}
    embedded = len(vectors.embedded(db, model, present)) if model else 0
    path = Path(db.conn.execute("PRAGMA database_list").fetchone()[2])
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return {
        "roots": [str(r) for r in list_roots(db)],
        "images": {s: states.get(s, 0) for s in ("ok", "missing", "unreadable")},
        "contents": len(present),  # distinct contents among present files: exact copies count once
        "embedded": embedded,
        "unreadable": states.get("unreadable", 0),
        "unreadable_ours": db.execute(
            "SELECT count(*) FROM files WHERE state = 'unreadable' AND ours"
        ).fetchone()[0],
        "database": str(path),
        "database_bytes": size,
        "embedding_model": model,
        "ordered": owntimes.count(db),  # originals `restore` holds
    }


def unreadable(db: sqlite_utils.Database) -> list[dict]:
    """Unreadable files, each with its reason and whose it is: "file" (the file is bad) or
    "imgrank" (imgrank failed on it; the next scan reads it again)."""
    return [
        {"path": fs_path(p), "reason": r, "cause": "imgrank" if ours else "file"}
        for p, r, ours in db.execute(
            "SELECT path, reason, ours FROM files WHERE state = 'unreadable' ORDER BY ours, path"
        )
    ]


def present_contents(db: sqlite_utils.Database) -> set[str]:
    """The content hashes of the files present now."""
    rows = db.execute("SELECT DISTINCT sha256 FROM files WHERE state = 'ok' AND sha256 IS NOT NULL")
    return {r[0] for r in rows}


def paths_of_contents(db: sqlite_utils.Database, shas: list[str]) -> dict[str, str]:
    """One path per content hash: a present file first, then the most recently seen."""
    rows = db.execute(
        f"""SELECT sha256, path FROM files WHERE sha256 IN {IN_JSON}
            ORDER BY state = 'ok', last_seen, id DESC""",
        [json.dumps(list(shas))],
    ).fetchall()
    return {sha: fs_path(p) for sha, p in rows}  # later rows win: the present, most recently seen file
