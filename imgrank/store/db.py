"""Open the database. The schema lives only in the migrations below, applied in order.

Transactions: the connection autocommits each bare statement, and every multi-statement write
is one `db.atomic()` block, which begins with BEGIN IMMEDIATE. A deferred transaction that reads
and then writes while another process writes fails at once with "database is locked" (SQLite
cannot wait on the busy timeout there without breaking the reader's snapshot); an immediate one
takes the write lock first, waiting on the busy timeout like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sqlite_utils
from sqlite_utils.migrations import Migrations

from imgrank import config
from imgrank.errors import StoreError
from imgrank.private import write_private
from imgrank.store import homes

migrations = Migrations("imgrank")
IN_JSON = "(SELECT value FROM json_each(?))"  # `x IN` a JSON list bound as one parameter


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    # Photo folders the owner registered.
    db["roots"].create({"id": int, "path": str, "added_at": float}, pk="id", not_null={"path"})
    db["roots"].create_index(["path"], unique=True)

    # One row per path ever seen. size/mtime_ns are what was last seen on disk *or set by imgrank*,
    # so a file imgrank touched is not "changed". state: ok | missing | unreadable.
    db["files"].create(
        {
            "id": int,
            "path": str,
            "root_id": int,
            "size": int,
            "mtime_ns": int,
            "sha256": str,
            "state": str,
            "reason": str,
            "width": int,
            "height": int,
            "first_seen": float,
            "last_seen": float,
        },
        pk="id",
        not_null={"path", "state"},
        foreign_keys=[("root_id", "roots", "id")],
    )
    db["files"].create_index(["path"], unique=True)
    db["files"].create_index(["sha256"])
    db["files"].create_index(["state"])

    # Image embeddings, keyed by content: a move, rename or copy reuses them.
    db["vectors"].create(
        {"sha256": str, "model": str, "dim": int, "vector": bytes},
        pk=("sha256", "model"),
    )
    # Embeddings of file-name text, keyed by the name itself.
    db["name_vectors"].create(
        {"name": str, "model": str, "dim": int, "vector": bytes},
        pk=("name", "model"),
    )

    # The current label of each content hash, and the append-only history of every change.
    db["labels"].create({"sha256": str, "label": str, "source": str, "updated_at": float}, pk="sha256")
    db["label_history"].create(
        {"id": int, "sha256": str, "label": str, "source": str, "path": str, "at": float},
        pk="id",
    )
    db["label_history"].create_index(["sha256"])

    # Training runs; a run with a head file can be activated.
    db["runs"].create(
        {
            "id": int,
            "started_at": float,
            "finished_at": float,
            "config": str,
            "counts": str,
            "metrics": str,
            "head_path": str,
            "embed_model": str,
            "active": int,
        },
        pk="id",
    )
    # Out-of-fold probabilities of "delete" from `train --cv K`, for `suspects`.
    db["oof"].create({"run_id": int, "sha256": str, "p_delete": float}, pk=("run_id", "sha256"))

    # Deletion scores from the active head.
    db["scores"].create({"sha256": str, "run_id": int, "score": float, "at": float}, pk="sha256")

    # Original mtimes of files imgrank has touched, stored before the first touch.
    db["mtimes"].create({"path": str, "original_ns": int, "set_ns": int, "at": float}, pk="path")

    # The daemon's heartbeat and counters (one row).
    db["daemon"].create(
        {"id": int, "pid": int, "started_at": float, "heartbeat_at": float, "counters": str},
        pk="id",
    )

    # Small key/value settings (e.g. the embedding model the store was built with).
    db["settings"].create({"key": str, "value": str}, pk="key")


@migrations()
def m002_mtimes_prev(db: sqlite_utils.Database) -> None:
    # prev_set_ns: the imgrank time a file had before the one being set, until the touch is done,
    # so a crash between the database write and the touch leaves a time `order`/`restore` know.
    # WITHOUT ROWID: one B-tree keyed by path, as order and restore write 100,000s of rows.
    db.execute("ALTER TABLE mtimes RENAME TO mtimes_old")
    db.execute(
        """CREATE TABLE mtimes (path TEXT PRIMARY KEY, original_ns INTEGER NOT NULL, set_ns INTEGER,
           prev_set_ns INTEGER, at FLOAT) WITHOUT ROWID"""
    )
    db.execute(
        "INSERT INTO mtimes (path, original_ns, set_ns, at) "
        "SELECT path, original_ns, set_ns, at FROM mtimes_old"
    )
    db.execute("DROP TABLE mtimes_old")


@migrations()
def m003_cues(db: sqlite_utils.Database) -> None:
    # Cheap cues measured while decoding, per content (prior.py): variance of the Laplacian of the
    # grey image, fractions of clipped dark and bright pixels, mean grey level.
    db["cues"].create(
        {"sha256": str, "sharpness": float, "dark": float, "bright": float, "mean": float}, pk="sha256"
    )


@migrations()
def m004_mtimes_content(db: sqlite_utils.Database) -> None:
    # The content hash of each file imgrank touched: a file that moved before a scan saw it is
    # found by its content and its imgrank time, and `restore` gives its time back there.
    db.execute("ALTER TABLE mtimes ADD COLUMN sha256 TEXT")
    db.execute("UPDATE mtimes SET sha256 = (SELECT f.sha256 FROM files f WHERE f.path = mtimes.path)")


@migrations()
def m005_dupe_groups(db: sqlite_utils.Database) -> None:
    # Near-duplicate groups of the last grouping (dupes.py): content hash -> group id.
    db["dupe_groups"].create({"sha256": str, "group_id": int}, pk="sha256")


@migrations()
def m006_unreadable_ours(db: sqlite_utils.Database) -> None:
    # 1 where a file is unreadable through imgrank's failure (its decoding process died or hung, an
    # internal error), not the file's own: such a file is read again by the next scan (index/rows.py).
    db.execute("ALTER TABLE files ADD COLUMN ours INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE files SET ours = 1 WHERE state = 'unreadable' AND (reason LIKE 'the decoding process died%' "
        "OR reason LIKE 'decoding took longer than%')"
    )


@migrations()
def m007_trash(db: sqlite_utils.Database) -> None:
    # Photos `imgrank trash` moved to the desktop Trash (trash.py): per batch, where each went, so
    # `trash --undo` puts the last batch back, and the daemon knows these deletions are imgrank's.
    db["trash"].create(
        {
            "id": int, "batch": int, "path": str, "sha256": str, "trashed": str, "info": str,
            "at": float, "undone_at": float,
        },
        pk="id",
    )  # fmt: skip
    db["trash"].create_index(["batch"])
    db["trash"].create_index(["path"])


@migrations()
def m008_sidecars(db: sqlite_utils.Database) -> None:
    # XMP sidecars imgrank wrote (sidecars.py): each one's original bytes and mtime, or that there
    # was none (existed 0), recorded before the first write; the hashes of the bytes imgrank wrote last
    # and of those it replaced (either may be on disk after a crash between record and write).
    db.execute(
        """CREATE TABLE sidecars (path TEXT PRIMARY KEY, photo TEXT NOT NULL, original BLOB,
           existed INTEGER NOT NULL, mtime_ns INTEGER, written_sha256 TEXT, prev_sha256 TEXT, at REAL)"""
    )


@migrations()
def m009_mtimes_identity(db: sqlite_utils.Database) -> None:
    # The device and inode of each file imgrank touched: a move keeps them (a copy does not), and
    # a photo moved or renamed onto an ordered path (an overwrite) has others.
    db.execute("ALTER TABLE mtimes ADD COLUMN dev INTEGER")
    db.execute("ALTER TABLE mtimes ADD COLUMN ino INTEGER")
    # Records whose photo is gone for good (another file was moved onto its path): kept apart, so
    # the photo living there now never gets their original, and reported until --forget-missing.
    db.execute(
        """CREATE TABLE mtimes_gone (id INTEGER PRIMARY KEY, path TEXT NOT NULL, original_ns INTEGER
           NOT NULL, set_ns INTEGER, sha256 TEXT, why TEXT, at FLOAT)"""
    )


@migrations()
def m010_mtimes_history(db: sqlite_utils.Database) -> None:
    # The imgrank times set before a record's last two (a JSON list, newest first; owntimes.EARLIER).
    db.execute("ALTER TABLE mtimes ADD COLUMN earlier TEXT")
    # The records of files given their original back, kept for a while (owntimes.given_back): a copy
    # made before the restore still holds imgrank's time, and once its source is gone it is that
    # photo, moved, and takes the original.
    db.execute(
        """CREATE TABLE mtimes_given_back (path TEXT PRIMARY KEY, original_ns INTEGER NOT NULL,
           set_ns INTEGER, prev_set_ns INTEGER, sha256 TEXT, dev INTEGER, ino INTEGER, earlier TEXT,
           at FLOAT) WITHOUT ROWID"""
    )  # no other index: each lookup reads it whole (a restore writes a row per photo, kept cheap)


class Store(sqlite_utils.Database):
    """The imgrank database: bare statements autocommit; `atomic()` is BEGIN IMMEDIATE (module text)."""

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Store]:
        if self.conn.in_transaction:  # nested: a savepoint inside the outer transaction
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise


# Left in the home beside a database once one is made: a home that has it but no database lost its
# store (deleted under a running daemon, a wrong --home), and only `scan` starts a new one there.
# `rm -rf` of the whole home takes the marker too: imgrank.store.homes lists each database outside it.
MARKER = ".imgrank-store"


def open_db(path: Path | str | None = None, fresh: bool = False) -> Store:
    """Open (creating if needed) the imgrank database: WAL, busy timeout, mode 0600, migrated.

    A database that is damaged, empty, or written by a newer imgrank is refused (StoreError); so
    is making a new one where one was (see MARKER), unless `fresh` (`imgrank scan`).
    """
    path = Path(path) if path else config.db_path()
    try:
        return _open(path, fresh)
    except sqlite3.DatabaseError as e:
        raise StoreError(damaged(path, e)) from None
    except OSError as e:
        raise StoreError(f"cannot open the database {path}: {e.strerror or e}") from None


def damaged(path: Path | str, error: Exception) -> str:
    """The one line for an SQLite error: what it says, where, and what to do."""
    if isinstance(error, sqlite3.OperationalError) and "locked" not in str(error):
        return f"database {path}: {error}"
    return (
        f"database {path}: {error} (damaged, or not an imgrank database: move it aside and run "
        "`imgrank scan` to build a new one)"
    )


def _open(path: Path, fresh: bool = False) -> Store:
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = path.parent / MARKER
    # Two processes opening a new database at once (the daemon and a command) would race in the
    # switch to WAL and the migrations: one at a time, under a lock file beside the database.
    lock_fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        _refuse_empty(path)
        if not path.exists():
            if not fresh and (marker.exists() or homes.known(path)):
                raise StoreError(
                    f"the database {path} is gone, though this home held one: nothing was created. "
                    "Point --home (or IMGRANK_HOME) at the folder that holds it, or run `imgrank scan "
                    "FOLDER` to start afresh (the original mtimes the old one kept are then lost)"
                )
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        if not marker.exists():
            write_private(marker, f"{path}\n")
        homes.remember(path)  # the marker goes with the home; this list, outside it, stays
        db = Store(path)
        db.conn.isolation_level = None  # autocommit; transactions only through atomic()
        db.execute("PRAGMA busy_timeout = 30000")
        _refuse_newer(db, path)
        db.enable_wal()
        migrations.apply(db)
    finally:
        os.close(lock_fd)
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            os.chmod(p, 0o600)
    return db


def _refuse_empty(path: Path) -> None:
    """An existing database of 0 bytes lost its contents (a full disk, a bad copy, a truncation):
    refuse it rather than start afresh, which would forget every original mtime `restore` needs.
    A -wal beside it does not save it: imgrank's database holds its first page from the switch to
    WAL on, so the -wal holds only the changes since the last checkpoint, and SQLite given the
    empty file would drop them and let the migrations build an empty store over it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        raise StoreError(
            f"database {path} is empty (0 bytes): it lost its contents, so it is left as it is; "
            "move it aside (or restore it from a backup) and run `imgrank scan` to start a new one"
        )


def _refuse_newer(db: sqlite_utils.Database, path: Path) -> None:
    """A database migrated by a newer imgrank has tables this one does not know: refuse it."""
    known = {m.name for m in migrations._migrations}
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise StoreError(
            f"database {path} was written by a newer imgrank (schema step {unknown[0]} is unknown "
            "here): upgrade imgrank to use it"
        )


MODEL_SOURCE = "embed_model_source"  # the embedding model as a scan loaded it: hub id or directory


def model_name(db: sqlite_utils.Database, given: str | None = None) -> str:
    """The embedding model to load: the one given (--model), else $IMGRANK_MODEL, else the one the
    store's last scan loaded (so `scan --model DIR` once is enough), else the default."""
    return given or config.model_name(get_setting(db, MODEL_SOURCE))


def get_setting(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_setting(db: sqlite_utils.Database, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", [key, value])


def to_blob(vector: np.ndarray) -> bytes:
    """A vector as a little-endian float32 blob."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
