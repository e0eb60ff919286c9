"""Scan: new / changed / moved / vanished files -> rows and vectors.

Identity is the SHA-256 of a file's bytes, so a move, rename or copy reuses its vectors. A file
whose path, size and mtime are unchanged is not read at all. Workers read each file once, hash
it, and decode+preprocess it only when its content has no vector yet; the main process embeds
full batches while the workers go on decoding, and commits each batch, so an interrupted scan
keeps what it finished.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from imgrank import db as dbm
from imgrank import owntimes
from imgrank.db import IN_JSON
from imgrank.embed import Embedder, preprocess_image
from imgrank.errors import ImgrankError, UnreadableImage
from imgrank.files import db_path, decode_image, fs_path, read_file, sha256_bytes, walk
from imgrank.prior import measure_cues, store_cues
from imgrank.review.thumbs import save_from_decode

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


def add_roots(db: sqlite_utils.Database, paths: Iterable[Path | str]) -> list[Path]:
    """Register photo folders (stored, so later runs need none). Returns them resolved."""
    added = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if not path.is_dir():
            raise ImgrankError(f"{p} is not a folder")
        db.execute("INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)", [str(path), time.time()])
        added.append(path)
    return added


def list_roots(db: sqlite_utils.Database) -> list[Path]:
    return [Path(r[0]) for r in db.execute("SELECT path FROM roots ORDER BY path").fetchall()]


def present_files(db: sqlite_utils.Database) -> list[tuple[str, str]]:
    """(path, sha256) of every present, readable image under the roots."""
    # `+state`: a scan of files beats the state index, which nearly every row matches.
    return db.execute("SELECT path, sha256 FROM files WHERE +state = 'ok' AND root_id IS NOT NULL").fetchall()


def _root_id(db: sqlite_utils.Database, path: Path) -> int | None:
    best = None
    for rid, root in db.execute("SELECT id, path FROM roots").fetchall():
        if path.is_relative_to(root) and (best is None or len(root) > len(best[1])):
            best = (rid, root)
    return best[0] if best else None


# --- identity -------------------------------------------------------------------------------

# imgrank's own times for a file (set by `order`), beside its row: `f` is files, `m` is mtimes.
OWN_TIMES_JOIN = "LEFT JOIN mtimes m ON m.path = f.path"


def unchanged(
    size: int | None, mtime_ns: int | None, set_ns: int | None, prev_set_ns: int | None, st
) -> bool:
    """Same size, and the mtime indexed or one imgrank set itself: the file needs no read."""
    return st.st_size == size and st.st_mtime_ns in (mtime_ns, set_ns, prev_set_ns)


# What a scan needs to know of each indexed path (one model's vectors): the key, then size, mtime_ns,
# state, embedded, imgrank's set_ns and prev_set_ns (see _done).
_KNOWN_SQL = f"""SELECT f.path, f.size, f.mtime_ns, f.state, v.sha256 IS NOT NULL, m.set_ns, m.prev_set_ns
    FROM files f LEFT JOIN vectors v ON v.sha256 = f.sha256 AND v.model = ? {OWN_TIMES_JOIN}"""


def _done(known: tuple | None, st) -> bool:
    """The file is as indexed and needs no work: unchanged, and embedded (or known unreadable)."""
    if known is None:
        return False
    size, mtime_ns, state, embedded, set_ns, prev_set_ns = known
    return unchanged(size, mtime_ns, set_ns, prev_set_ns, st) and (
        state == "unreadable" or (state == "ok" and bool(embedded))
    )


# --- workers --------------------------------------------------------------------------------

_known: set[str] = set()


def _init_worker(known: set[str]) -> None:
    global _known
    _known = known


def _init_pool_worker(known: set[str]) -> None:
    # Ctrl-C reaches the whole process group: the parent decides how to stop, not each worker.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(known)


def _read_one(path: str) -> dict:
    """Read a file once: hash it, and decode+preprocess it unless its content is already embedded."""
    out = {"path": path, "sha256": None, "array": None, "size": None, "mtime_ns": None}
    try:
        data, st = read_file(path)
        out.update(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256_bytes(data))
        if out["sha256"] not in _known:
            img = decode_image(data, path)
            out["width"], out["height"] = img.info["original_size"]
            out["array"] = preprocess_image(img)
            out["cues"] = measure_cues(img)  # the prior's cues and the review thumbnail, from this decode
            save_from_decode(img, out["sha256"])
    except UnreadableImage as e:
        out["reason"] = str(e)
    return out


def _results(paths: list[str], known: set[str], jobs: int):
    if jobs <= 1 or len(paths) < 8:
        _init_worker(known)
        yield from map(_read_one, paths)
        return
    ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    with ctx.Pool(jobs, initializer=_init_pool_worker, initargs=(known,)) as pool:
        yield from pool.imap(_read_one, paths, chunksize=2)


# --- indexing -------------------------------------------------------------------------------


def _embedded_shas(db: sqlite_utils.Database, model: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT sha256 FROM vectors WHERE model = ?", [model])}


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
    known = _embedded_shas(db, model)
    old = {
        r[0]: (r[1], r[2])
        for r in db.execute(f"SELECT path, sha256, state FROM files WHERE path IN {IN_JSON}", [_json(paths)])
    }
    missing_shas = {r[0] for r in db.execute("SELECT sha256 FROM files WHERE state = 'missing'")}
    pending: list[dict] = []

    def flush() -> None:
        decoded = [r for r in pending if r["array"] is not None and r["sha256"] not in known]
        vectors = embedder.embed_images(np.stack([r["array"] for r in decoded])) if decoded else []
        names = sorted({os.path.basename(r["path"]) for r in pending if r["sha256"]})
        have = {
            r[0]
            for r in db.execute(
                f"SELECT name FROM name_vectors WHERE model = ? AND name IN {IN_JSON}",
                [model, _json(names)],
            )
        }
        names = [n for n in names if n not in have]
        name_vectors = embedder.embed_texts(names) if names else []
        now = time.time()
        with db.atomic():
            for r, v in zip(decoded, vectors, strict=True):
                db.execute(
                    "INSERT OR REPLACE INTO vectors (sha256, model, dim, vector) VALUES (?, ?, ?, ?)",
                    [r["sha256"], model, len(v), dbm.to_blob(v)],
                )
                known.add(r["sha256"])
            for n, v in zip(names, name_vectors, strict=True):
                db.execute(
                    "INSERT OR REPLACE INTO name_vectors (name, model, dim, vector) VALUES (?, ?, ?, ?)",
                    [n, model, len(v), dbm.to_blob(v)],
                )
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
        elif previous[0] != r["sha256"]:
            result.changed += 1
        else:
            result.unchanged += 1  # touched, or re-embedded for a new model: same content
        pending.append(r)
        if sum(1 for p in pending if p["array"] is not None) >= BATCH or len(pending) >= 4 * BATCH:
            flush()
    if pending:
        flush()


def _write_row(db: sqlite_utils.Database, r: dict, now: float) -> None:
    reason = r.get("reason")
    state = "unreadable" if reason else "ok"
    root_id = _root_id(db, Path(r["path"]))
    db.execute(
        """INSERT INTO files (path, root_id, size, mtime_ns, sha256, state, reason, width, height,
                              first_seen, last_seen)
           VALUES (:path, :root_id, :size, :mtime_ns, :sha256, :state, :reason, :width, :height, :now, :now)
           ON CONFLICT(path) DO UPDATE SET root_id = :root_id, size = :size, mtime_ns = :mtime_ns,
               sha256 = coalesce(:sha256, sha256), state = :state, reason = :reason,
               width = coalesce(:width, width), height = coalesce(:height, height), last_seen = :now""",
        {
            "path": r["path"], "root_id": root_id, "size": r["size"], "mtime_ns": r["mtime_ns"],
            "sha256": r["sha256"], "state": state, "reason": reason,
            "width": r.get("width"), "height": r.get("height"), "now": now,
        },
    )  # fmt: skip


def _json(items: list[str]) -> str:
    import json

    return json.dumps(items)


def _check_model(db: sqlite_utils.Database, embedder: Embedder, result: ScanResult) -> None:
    previous = dbm.get_setting(db, "embed_model")
    if previous and previous != embedder.model_id:
        count = db.execute("SELECT count(*) FROM files WHERE state = 'ok'").fetchone()[0]
        result.warnings.append(
            f"embedding model changed from {previous} to {embedder.model_id}: "
            f"re-embedding {count} images (vectors of the old model are kept but never mixed in)"
        )
    dbm.set_setting(db, "embed_model", embedder.model_id)


def scan(
    db: sqlite_utils.Database,
    roots: Iterable[Path | str],
    embedder: Embedder,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ScanResult:
    """Index every root: new, changed and moved files are read; vanished ones marked missing."""
    start = time.monotonic()
    result = ScanResult()
    _check_model(db, embedder, result)
    model = embedder.model_id
    rows = {r[0]: r[1:] for r in db.execute(_KNOWN_SQL, [model])}
    todo: list[str] = []
    vanished: list[str] = []
    for root in [Path(r) for r in roots]:
        if not root.is_dir():
            result.warnings.append(f"root {root} is not there (unmounted?): skipped, nothing marked missing")
            continue
        seen = set()
        for path in walk(root):
            p = str(path)
            seen.add(p)
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between listing and stat
            row = rows.get(p)
            if _done(row, st):
                result.unchanged += 1
                if row[2] == "unreadable":
                    result.unreadable += 1
            else:
                todo.append(p)
        prefix = str(root).rstrip(os.sep) + os.sep
        vanished += [
            p for p, r in rows.items() if p.startswith(prefix) and p not in seen and r[2] != "missing"
        ]
    if vanished:
        with db.atomic():
            db.execute(
                f"UPDATE files SET state = 'missing', last_seen = ? WHERE path IN {IN_JSON}",
                [time.time(), _json(vanished)],
            )
        result.missing = len(vanished)
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
        db.execute(f"DELETE FROM scores WHERE sha256 IN {IN_JSON}", [_json([sha for _, sha in moved])])
    result.missing -= len(set(vanished) & {r[0] for r in moved})
    result.seconds = time.monotonic() - start
    return result


def index_paths(
    db: sqlite_utils.Database, paths: Iterable[Path | str], embedder: Embedder, jobs: int | None = None
) -> ScanResult:
    """Index and embed exactly these files (inside the roots or not); unchanged ones cost nothing."""
    start = time.monotonic()
    result = ScanResult()
    _check_model(db, embedder, result)
    todo = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        row = db.execute(_KNOWN_SQL + " WHERE f.path = ?", [embedder.model_id, str(path)]).fetchone()
        try:
            st = path.stat()
        except OSError:
            st = None
        if st and _done(row[1:] if row else None, st):
            result.unchanged += 1
        else:
            todo.append(str(path))
    _index(db, todo, embedder, jobs or os.cpu_count() or 1, result, None)
    result.seconds = time.monotonic() - start
    return result


def mark_missing(db: sqlite_utils.Database, path: Path | str) -> str | None:
    """A file vanished: keep its row, vectors and labels. Returns its content hash, if known."""
    row = db.execute("SELECT sha256 FROM files WHERE path = ? AND state != 'missing'", [str(path)]).fetchone()
    if row is None:
        return None
    db.execute("UPDATE files SET state = 'missing', last_seen = ? WHERE path = ?", [time.time(), str(path)])
    return row[0]


def move_path(db: sqlite_utils.Database, src: Path | str, dst: Path | str) -> bool:
    """A rename seen as it happened: the row (and so its vectors and labels) follows the file."""
    src, dst = str(src), str(dst)
    try:
        st = os.stat(dst)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:  # already moved on again: the row follows now, the next rename carries it on
        size = mtime_ns = None
    with owntimes.locked(db), db.atomic():
        if db.execute("SELECT 1 FROM files WHERE path = ?", [src]).fetchone() is None:
            return False
        own = owntimes.record(db, src)
        if own and mtime_ns in own.set_times():
            mtime_ns = None  # a rename keeps imgrank's time: the indexed one stays the file's own
        db.execute("DELETE FROM files WHERE path = ?", [dst])
        db.execute(
            """UPDATE files SET path = ?, root_id = ?, size = coalesce(?, size),
               mtime_ns = coalesce(?, mtime_ns), last_seen = ? WHERE path = ?""",
            [dst, _root_id(db, Path(dst)), size, mtime_ns, time.time(), src],
        )
        owntimes.follow(db, src, dst)
        # The file name is one of the head's features: the photo is scored again under its new one.
        db.execute("DELETE FROM scores WHERE sha256 = (SELECT sha256 FROM files WHERE path = ?)", [dst])
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
    embedded = db.execute(
        """SELECT count(DISTINCT f.sha256) FROM files f JOIN vectors v ON v.sha256 = f.sha256 AND v.model = ?
           WHERE f.state = 'ok'""",
        [model],
    ).fetchone()[0]
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
        {"path": p, "reason": r}
        for p, r in db.execute("SELECT path, reason FROM files WHERE state = 'unreadable' ORDER BY path")
    ]
