"""Scan: new / changed / moved / vanished files -> rows and vectors.

Identity is the SHA-256 of a file's bytes, so a move, rename or copy reuses its vectors. A file
whose path, size and mtime are unchanged is not read at all. Workers read each file once, hash
it, and decode+preprocess it only when its content has no vector yet; the main process embeds
full batches while the workers go on decoding, and commits each batch, so an interrupted scan
keeps what it finished. Decoding runs in imgrank.workers (bounded memory, survives dead workers).
No SQL here: rows go through imgrank.store.rows, vectors through imgrank.store.vectors.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import sqlite_utils

from imgrank import config
from imgrank.embed import Embedder
from imgrank.files import display_name, under, walk
from imgrank.index import needs
from imgrank.store import db as dbm
from imgrank.store import owntimes, vectors
from imgrank.store import rows as store
from imgrank.store.cues import store_cues
from imgrank.store.scores import forget_scores
from imgrank.workers import init_worker, read_all, read_one

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


def _results(paths: list[str], known: set[str], jobs: int, batch: int) -> Iterator[dict]:
    """Each path read (see workers.read_one) in worker processes, under their memory limit: one
    worker for one job or a few files; the workers keep decoding the next batch while this process
    embeds one. jobs=0 reads in this process, without that limit (for tests that watch the
    decoder); the command line always has at least one worker."""
    if jobs == 0:
        init_worker(known)
        return map(read_one, paths)
    return read_all(paths, known, jobs if len(paths) >= 8 else 1, slack=batch)


def _index(
    db: sqlite_utils.Database,
    paths: list[str],
    embedder: Embedder,
    jobs: int,
    result: ScanResult,
    progress: Progress | None,
    on_embedded: Progress | None = None,
) -> None:
    """Read, hash, decode and embed `paths` (all need work), committing in batches; `on_embedded`
    gets the count embedded so far after each batch."""
    model = embedder.model_id
    known = vectors.embedded(db, model)
    old = store.rows(db, paths)
    missing_shas = store.missing_contents(db)
    before = owntimes.records_of(db, paths)  # imgrank's times as the reads start: see write_rows
    pending: list[dict] = []
    batch = embedder.scan_batch or BATCH  # large on a GPU

    def flush() -> None:
        decoded = [r for r in pending if r["array"] is not None and r["sha256"] not in known]
        images = embedder.embed_images(np.stack([r["array"] for r in decoded])) if decoded else []
        names = vectors.missing_names(
            db, model, [vectors.name_key(r["path"]) for r in pending if r["sha256"]]
        )
        name_vectors = embedder.embed_texts(names) if names else []
        with db.atomic():
            vectors.store(
                db,
                model,
                [(r["sha256"], v) for r, v in zip(decoded, images, strict=True)],
                zip(names, name_vectors, strict=True),
            )
            known.update(r["sha256"] for r in decoded)
            store.write_rows(db, pending, before)
            store_cues(db, [(r["sha256"], r["cues"]) for r in decoded if r.get("cues")])
        result.embedded += len(decoded)
        if progress:
            progress(len(pending))
        pending.clear()
        if on_embedded and decoded:
            on_embedded(result.embedded)

    results = _results(paths, known, jobs, batch)
    try:
        for r in results:
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
    finally:
        # Stop the workers now, also when embedding or writing failed: left to the garbage
        # collector, the pool's shutdown can run inside another thread's lock and deadlock.
        close = getattr(results, "close", None)
        if close:
            close()


def _jobs(jobs: int | None) -> int:
    """Decoding workers: as many as CPUs unless told (0: none, in this process)."""
    return (os.cpu_count() or 1) if jobs is None else jobs


def _check_model(db: sqlite_utils.Database, embedder: Embedder, result: ScanResult) -> None:
    previous = dbm.get_setting(db, "embed_model")
    if previous and previous != embedder.model_id:
        count = store.count_present(db)
        result.warnings.append(
            f"embedding model changed from {previous} to {embedder.model_id}: "
            f"re-embedding {count} images (vectors of the old model are kept but never mixed in)"
        )
    dbm.set_setting(db, "embed_model", embedder.model_id)
    source = getattr(embedder, "source", "")  # test doubles have none
    if source:
        dbm.set_setting(db, dbm.MODEL_SOURCE, source)  # later commands load the same model


@contextmanager
def scan_lock(
    on_wait: Callable[[], None] | None = None, while_waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """One scan (or index_paths) at a time per imgrank home: two would read and embed the same
    photos, and write their rows from what each read. A second one calls `on_wait` once, waits,
    and then finds done what the first one did. While it waits, `while_waiting` is called every
    0.1 s: it may raise to give up (the daemon stops at once even while a long scan runs)."""
    home = config.home_dir()
    fd = os.open(home / "scan.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            _wait_for_lock(fd, while_waiting)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _wait_for_lock(fd: int, while_waiting: Callable[[], None] | None) -> None:
    if while_waiting is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        while_waiting()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.1)


def scan(
    db: sqlite_utils.Database,
    roots: Iterable[Path | str],
    embedder: Embedder,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
    while_waiting: Callable[[], None] | None = None,
    retry_unreadable: bool = False,
    on_embedded: Progress | None = None,
) -> ScanResult:
    """Index every root: new, changed and moved files are read; vanished ones marked missing;
    with `retry_unreadable`, every unreadable file is read again (not only those imgrank failed on).
    `on_embedded(n)` is called after each committed batch with the photos embedded so far (see
    first_order.FirstOrder).

    Runs under scan_lock: a scan started while another runs waits for it (`on_wait` is told)."""
    with scan_lock(on_wait, while_waiting):
        return _scan(
            db, [Path(r) for r in roots], embedder, jobs, progress, on_total, retry_unreadable, on_embedded
        )


def _scan(
    db, roots: list[Path], embedder: Embedder, jobs, progress, on_total, retry=False, on_embedded=None
) -> ScanResult:
    start = time.monotonic()
    result = ScanResult()
    _check_model(db, embedder, result)
    known = store.rows(db)
    own = needs.own_times(db, list(known))
    embedded = vectors.embedded(db, embedder.model_id)
    todo: list[str] = []
    stamps: dict[str, int] = {}  # mtimes of the files to read: the newest are read first
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
            if needs.needs(row, own.get(p), st, embedded, retry):
                todo.append(p)
                stamps[p] = st.st_mtime_ns
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
        store.mark_all_missing(db, vanished)
        result.missing = len(vanished)
    del known, own, embedded
    # Newest first: on a first scan of a big folder, the photos most likely still to be sorted
    # are embedded (and can be ordered) first.
    todo.sort(key=stamps.__getitem__, reverse=True)
    del stamps
    if on_total:
        on_total(len(todo))
    _index(db, todo, embedder, _jobs(jobs), result, progress, on_embedded)
    moved = store.settle_moves(db, partial(forget_scores, db))
    result.missing -= len(set(vanished) & moved)
    result.seconds = time.monotonic() - start
    return result


def index_paths(
    db: sqlite_utils.Database,
    paths: Iterable[Path | str],
    embedder: Embedder,
    jobs: int | None = None,
    on_wait: Callable[[], None] | None = None,
    while_waiting: Callable[[], None] | None = None,
) -> ScanResult:
    """Index and embed exactly these files (inside the roots or not); unchanged ones cost nothing.

    Under scan_lock, as a scan: waits for one running (see scan_lock for the two callbacks)."""
    with scan_lock(on_wait, while_waiting):
        return _index_paths(db, paths, embedder, jobs)


def _index_paths(
    db: sqlite_utils.Database, paths: Iterable[Path | str], embedder: Embedder, jobs: int | None
) -> ScanResult:
    start = time.monotonic()
    result = ScanResult()
    _check_model(db, embedder, result)
    paths = list(dict.fromkeys(str(Path(p).expanduser().resolve()) for p in paths))
    work = needs.needs_work(db, paths, embedder.model_id)
    todo = []
    for p in paths:
        if p in work or not os.path.exists(p):
            todo.append(p)  # one that cannot be stat'ed is read, and recorded with its reason
        else:
            result.unchanged += 1
    _index(db, todo, embedder, _jobs(jobs), result, None)
    result.seconds = time.monotonic() - start
    return result


def embed_names(db: sqlite_utils.Database, embedder: Embedder, paths: Iterable[str]) -> int:
    """Embed the file names of these paths that have no name vector yet (a rename seen as it
    happened gives a photo a new name, one of the head's features). Returns how many."""
    names = vectors.missing_names(db, embedder.model_id, (vectors.name_key(p) for p in paths))
    if not names:
        return 0
    with db.atomic():
        vectors.store(db, embedder.model_id, names=zip(names, embedder.embed_texts(names), strict=True))
    return len(names)
