"""Scan: new / changed / moved / vanished files -> rows and vectors.

Identity is the SHA-256 of a file's bytes, so a move, rename or copy reuses its vectors. A file
whose path, size and mtime are unchanged is not read at all. Workers read each file once, hash
it, and decode+preprocess it only when its content has no vector yet; the main process embeds
full batches while the workers go on decoding, and commits each batch, so an interrupted scan
keeps what it finished. Decoding runs in imgrank.workers (bounded memory, survives dead workers).

Owns the tables `files` and `roots`; nothing else runs SQL on them. Paths are stored in their
reversible text form (files.db_path) and handed out as ordinary `str` (files.fs_path).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sqlite_utils

from imgrank import config, owntimes, runs, vectors
from imgrank import db as dbm
from imgrank.db import IN_JSON
from imgrank.embed import Embedder
from imgrank.errors import ImgrankError
from imgrank.files import db_path, display_name, fs_path, under, walk
from imgrank.prior import store_cues
from imgrank.workers import init_worker as _init_worker
from imgrank.workers import read_all
from imgrank.workers import read_one as _read_one

BATCH = 32
Progress = Callable[[int], None]


@dataclass
class ScanResult:
    new: int = 0
    moved: int = 0
    changed: int = 0
    unchanged: int = 0
    missing: int = 0
    unreadable: int = 0
    embedded: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


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


class ContentFacts(NamedTuple):
    """Facts of one content (not of one of its paths): a copy or a move never changes them."""

    path: str  # the name the head sees: of its first-seen present file
    width: int | None
    height: int | None
    size: int | None


_ROW = "path, sha256, size, mtime_ns, state, reason, width, height"


def _row(r: tuple) -> FileRow:
    return FileRow(fs_path(r[0]), *r[1:])


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


def unchanged(
    size: int | None, mtime_ns: int | None, set_ns: int | None, prev_set_ns: int | None, st
) -> bool:
    """Same size, and the mtime indexed or one imgrank set itself: the file needs no read."""
    return st.st_size == size and st.st_mtime_ns in (mtime_ns, set_ns, prev_set_ns)


def _own_times(db: sqlite_utils.Database, paths: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """(set_ns, prev_set_ns) of the paths imgrank ordered: times a scan takes as the file's own."""
    return owntimes.own_times(db, paths)


def _needs(row: FileRow | None, own: tuple | None, st: os.stat_result, embedded: set[str] | None) -> bool:
    """The one rule: does a file whose stat is `st` need reading? See needs_work."""
    if row is None or row.state == "missing":
        return True
    if not unchanged(row.size, row.mtime_ns, *(own or (None, None)), st):
        return True
    if row.state == "unreadable" or embedded is None:
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
        own.update(_own_times(db, chunk))
    embedded = None
    if model is not None:
        embedded = vectors.embedded(db, model, {r.sha256 for r in known.values() if r.sha256})
    out = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if _needs(known.get(p), own.get(p), st, embedded):
            out.add(p)
    return out


def file_needs_work(db: sqlite_utils.Database, path: str, model: str | None = None) -> bool:
    """needs_work for one path (False when it cannot be stat'ed)."""
    return path in needs_work(db, [path], model)


def indexed(db: sqlite_utils.Database, path: str) -> FileRow | None:
    """The row of a path if the store has it up to date (needs no work), else None."""
    if file_needs_work(db, path):
        return None
    return rows(db, [path]).get(path)


# --- indexing -------------------------------------------------------------------------------


def _results(paths: list[str], known: set[str], jobs: int) -> Iterator[dict]:
    """Each path read (see workers.read_one): in this process with one job, else in workers."""
    if jobs <= 1 or len(paths) < 8:
        _init_worker(known)
        return map(_read_one, paths)
    return read_all(paths, known, jobs)


def _index(
    db: sqlite_utils.Database,
    paths: list[str],
    embedder: Embedder,
    jobs: int,
    result: ScanResult,
    progress: Progress | None,
) -> None:
    """Read, hash, decode and embed `paths` (all need work), committing in batches."""
    model = embedder.model_id
    known = vectors.embedded(db, model)
    old = rows(db, paths)
    missing_shas = {r[0] for r in db.execute("SELECT sha256 FROM files WHERE state = 'missing'")}
    pending: list[dict] = []
    batch = embedder.scan_batch or BATCH  # large on a GPU

    def flush() -> None:
        decoded = [r for r in pending if r["array"] is not None and r["sha256"] not in known]
        images = embedder.embed_images(np.stack([r["array"] for r in decoded])) if decoded else []
        names = vectors.missing_names(
            db, model, [vectors.name_key(r["path"]) for r in pending if r["sha256"]]
        )
        name_vectors = embedder.embed_texts(names) if names else []
        now = time.time()
        with db.atomic():
            vectors.store(
                db,
                model,
                [(r["sha256"], v) for r, v in zip(decoded, images, strict=True)],
                zip(names, name_vectors, strict=True),
            )
            known.update(r["sha256"] for r in decoded)
            for r in pending:
                _write_row(db, r, now)
            store_cues(db, [(r["sha256"], r["cues"]) for r in decoded if r.get("cues")])
        result.embedded += len(decoded)
        if progress:
            progress(len(pending))
        pending.clear()

    for r in _results(paths, known, jobs):
        previous = old.get(r["path"])
        if r.get("reason"):
            result.unreadable += 1
        elif previous is None:
            if r["sha256"] in missing_shas:
                result.moved += 1
            else:
                result.new += 1
        elif previous.sha256 != r["sha256"]:
            result.changed += 1
        else:
            result.unchanged += 1  # touched, or re-embedded for a new model: same content
        pending.append(r)
        if sum(1 for p in pending if p["array"] is not None) >= batch or len(pending) >= 4 * batch:
            flush()
    if pending:
        flush()


def _write_row(db: sqlite_utils.Database, r: dict, now: float) -> None:
    """Insert or update a path's row. Width and height belong to the content: a row for content
    that was not decoded (a copy, a move) takes them from a row of the same content."""
    reason = r.get("reason")
    state = "unreadable" if reason else "ok"
    db.execute(
        """INSERT INTO files (path, root_id, size, mtime_ns, sha256, state, reason, width, height,
                              first_seen, last_seen)
           VALUES (:path, :root_id, :size, :mtime_ns, :sha256, :state, :reason, :width, :height, :now, :now)
           ON CONFLICT(path) DO UPDATE SET root_id = :root_id, size = :size, mtime_ns = :mtime_ns,
               sha256 = coalesce(:sha256, sha256), state = :state, reason = :reason,
               width = :width, height = :height, last_seen = :now""",
        {
            "path": db_path(r["path"]), "root_id": _root_id(db, r["path"]), "size": r["size"],
            "mtime_ns": r["mtime_ns"], "sha256": r["sha256"], "state": state, "reason": reason,
            "width": r.get("width"), "height": r.get("height"), "now": now,
        },
    )  # fmt: skip
    if r["sha256"] and r.get("width") is None:
        db.execute(
            """UPDATE files SET (width, height) = (SELECT width, height FROM files
                   WHERE sha256 = :sha AND width IS NOT NULL AND height IS NOT NULL LIMIT 1)
               WHERE path = :path""",
            {"sha": r["sha256"], "path": db_path(r["path"])},
        )


def _check_model(db: sqlite_utils.Database, embedder: Embedder, result: ScanResult) -> None:
    previous = dbm.get_setting(db, "embed_model")
    if previous and previous != embedder.model_id:
        count = db.execute("SELECT count(*) FROM files WHERE state = 'ok'").fetchone()[0]
        result.warnings.append(
            f"embedding model changed from {previous} to {embedder.model_id}: "
            f"re-embedding {count} images (vectors of the old model are kept but never mixed in)"
        )
    dbm.set_setting(db, "embed_model", embedder.model_id)


@contextmanager
def scan_lock(on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """One scan at a time per imgrank home (two would read and embed the same photos). A second
    one calls `on_wait` once, waits, and then finds done what the first one did."""
    home = config.home_dir()
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "scan.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def scan(
    db: sqlite_utils.Database,
    roots: Iterable[Path | str],
    embedder: Embedder,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> ScanResult:
    """Index every root: new, changed and moved files are read; vanished ones marked missing.

    Runs under scan_lock: a scan started while another runs waits for it (`on_wait` is told)."""
    with scan_lock(on_wait):
        return _scan(db, [Path(r) for r in roots], embedder, jobs, progress, on_total)


def _scan(db, roots: list[Path], embedder: Embedder, jobs, progress, on_total) -> ScanResult:
    start = time.monotonic()
    result = ScanResult()
    _check_model(db, embedder, result)
    known = rows(db)
    own = _own_times(db, list(known))
    embedded = vectors.embedded(db, embedder.model_id)
    todo: list[str] = []
    vanished: list[str] = []

    unlisted: list[str] = []  # folders that cannot be listed: what is under them is not known gone

    def cannot_list(folder: str, reason: str) -> None:
        unlisted.append(folder)
        result.warnings.append(f"cannot list {display_name(folder)} ({reason}): the photos in it are skipped")

    for root in roots:
        if not root.is_dir():
            result.warnings.append(
                f"root {display_name(root)} is not there (unmounted?): skipped, nothing marked missing"
            )
            continue
        seen = set()
        for path in walk(root, cannot_list):
            p = str(path)
            seen.add(p)
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between listing and stat
            row = known.get(p)
            if _needs(row, own.get(p), st, embedded):
                todo.append(p)
            else:
                result.unchanged += 1
                result.unreadable += row.state == "unreadable"
        vanished += [
            p
            for p, r in known.items()
            if r.state != "missing"
            and under(p, root)
            and p not in seen
            and not any(under(p, f) for f in unlisted)
        ]
    if vanished:
        with db.atomic():
            db.execute(
                f"UPDATE files SET state = 'missing', last_seen = ? WHERE path IN {IN_JSON}",
                [time.time(), json.dumps([db_path(p) for p in vanished])],
            )
        result.missing = len(vanished)
    del known, own, embedded
    if on_total:
        on_total(len(todo))
    _index(db, todo, embedder, jobs or os.cpu_count() or 1, result, progress)
    # A vanished path whose content is present at another path was moved, not lost: its row
    # goes (the vectors and labels stay with the content).
    # Under the mtimes lock: a record that follows its file must not cross an order or a restore.
    with owntimes.locked(db), db.atomic():
        moved = db.execute(
            """DELETE FROM files WHERE state = 'missing' AND sha256 IN
               (SELECT sha256 FROM files WHERE state = 'ok') RETURNING path, sha256"""
        ).fetchall()
        _own_times_follow(db, moved)
        # The file name is one of the head's features: a moved photo is scored again under its new one.
        runs.forget_scores(db, [sha for _, sha in moved])
    result.missing -= len(set(vanished) & {fs_path(r[0]) for r in moved})
    result.seconds = time.monotonic() - start
    return result


def index_paths(
    db: sqlite_utils.Database, paths: Iterable[Path | str], embedder: Embedder, jobs: int | None = None
) -> ScanResult:
    """Index and embed exactly these files (inside the roots or not); unchanged ones cost nothing."""
    start = time.monotonic()
    result = ScanResult()
    _check_model(db, embedder, result)
    paths = list(dict.fromkeys(str(Path(p).expanduser().resolve()) for p in paths))
    work = needs_work(db, paths, embedder.model_id)
    todo = []
    for p in paths:
        if p in work or not os.path.exists(p):
            todo.append(p)  # one that cannot be stat'ed is read, and recorded with its reason
        else:
            result.unchanged += 1
    _index(db, todo, embedder, jobs or os.cpu_count() or 1, result, None)
    result.seconds = time.monotonic() - start
    return result


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


def embed_names(db: sqlite_utils.Database, embedder: Embedder, paths: Iterable[str]) -> int:
    """Embed the file names of these paths that have no name vector yet (a rename seen as it
    happened gives a photo a new name, one of the head's features). Returns how many."""
    names = vectors.missing_names(db, embedder.model_id, (vectors.name_key(p) for p in paths))
    if not names:
        return 0
    with db.atomic():
        vectors.store(db, embedder.model_id, names=zip(names, embedder.embed_texts(names), strict=True))
    return len(names)


def present_under(db: sqlite_utils.Database, folder: Path | str) -> list[str]:
    """Paths of indexed files under `folder` that are not missing."""
    prefix = db_path(folder).rstrip(os.sep) + os.sep
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    sql = "SELECT path FROM files WHERE state != 'missing' AND path LIKE ? ESCAPE '\\'"
    return [fs_path(r[0]) for r in db.execute(sql, [like])]


def drop_if_moved(db: sqlite_utils.Database, path: Path | str, sha: str) -> bool:
    """A vanished path whose content is present at another path was moved (or was one of two
    copies), not lost: its row goes, vectors and labels stay with the content. True if so."""
    if db.execute("SELECT 1 FROM files WHERE sha256 = ? AND state = 'ok'", [sha]).fetchone() is None:
        return False
    db.execute("DELETE FROM files WHERE path = ?", [db_path(path)])
    return True


def move_path(db: sqlite_utils.Database, src: Path | str, dst: Path | str) -> bool:
    """A rename seen as it happened: the row (and so its vectors and labels) follows the file."""
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
        runs.forget_scores(db, [row[0]] if row and row[0] else [])
    return True


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
        "embedded": embedded,
        "unreadable": states.get("unreadable", 0),
        "database": str(path),
        "database_bytes": size,
        "embedding_model": model,
        "ordered": owntimes.count(db),  # originals `restore` holds
    }


def unreadable(db: sqlite_utils.Database) -> list[dict]:
    return [
        {"path": fs_path(p), "reason": r}
        for p, r in db.execute("SELECT path, reason FROM files WHERE state = 'unreadable' ORDER BY path")
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
