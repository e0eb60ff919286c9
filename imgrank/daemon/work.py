"""The daemon's work, one function per step: catch up with roots, index what settled, embed the
names of renamed photos, put the order right. Each calls the owners of the tables (index, model,
order), logs what it did in plain words naming the photos, and returns what the loop counts; the
loop (loop.py) decides when.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imgrank import dupes, index, sidecars
from imgrank.errors import describe
from imgrank.order import order
from imgrank.ranking import photo_files
from imgrank.store import vectors
from imgrank.store.scores import has_scores
from imgrank.words import names, plural, scan_summary

log = logging.getLogger("imgrank.daemon")

CHUNK = 64  # files per index call: the stop flag is checked between chunks


class Stopped(Exception):
    """Raised inside long work when a stop was asked for."""


def _waiting(stopping: Callable[[], bool]) -> dict:
    """index.scan's and index_paths' callbacks while a scan in another process holds the scan lock:
    say so once, and stop waiting when asked to stop."""

    def on_wait() -> None:
        log.info("waiting for a scan in another process to finish")

    def while_waiting() -> None:
        if stopping():
            raise Stopped

    return {"on_wait": on_wait, "while_waiting": while_waiting}


@dataclass
class Indexed:
    """What indexing a batch of settled files did."""

    arrived: list[str] = field(default_factory=list)  # not indexed before
    changed: list[str] = field(default_factory=list)  # indexed, but written since
    indexed: int = 0  # files read (some may turn out unchanged: only touched)
    embedded: int = 0
    batches: int = 0
    failed: int = 0  # chunks that failed and were retried one by one
    not_indexed: list[str] = field(default_factory=list)  # failed alone too: not counted, tried later


def catch_up(
    db, embedder, roots: list[Path], stopping: Callable[[], bool], on_embedded: Callable | None = None
) -> index.ScanResult:
    """Scan `roots` for what changed while nobody watched (raises Stopped when asked to stop);
    `on_embedded` as for index.scan (the loop orders the first photos of a big catch-up early)."""

    def progress(_n: int) -> None:
        if stopping():
            raise Stopped

    result = index.scan(db, roots, embedder, progress=progress, on_embedded=on_embedded, **_waiting(stopping))
    for w in result.warnings:
        log.warning(w)
    log.info("caught up with %s: %s", ", ".join(map(str, roots)), scan_summary(result.as_dict()))
    return result


def index_settled(
    db, embedder, paths: list[str], stopping: Callable[[], bool], after_chunk: Callable[[], None]
) -> Indexed:
    """Index and embed settled files in chunks, skipping those as indexed (such as imgrank's own
    touches); `after_chunk` runs after each (the loop scores and marks the order out of date)."""
    known = {p for p, row in index.rows(db, paths).items() if row.state != "missing"}
    need = index.needs_work(db, paths)
    todo = [p for p in paths if p in need or not os.path.exists(p)]  # one gone is recorded as such
    done = Indexed()
    for i in range(0, len(todo), CHUNK):
        if stopping():
            raise Stopped
        chunk = todo[i : i + CHUNK]
        try:
            result = index.index_paths(db, chunk, embedder, jobs=1, **_waiting(stopping))
        except Stopped:
            raise
        except Exception:
            log.exception("indexing %s failed; trying them one by one", plural(len(chunk), "file"))
            done.failed += 1
            result, failed = _one_by_one(db, embedder, chunk, stopping)
            done.not_indexed += failed
            chunk = [p for p in chunk if p not in failed]
        done.batches += 1
        done.indexed += len(chunk) - result.unchanged
        done.embedded += result.embedded
        if result.unreadable:
            log.warning(
                "%s skipped (see `imgrank status --unreadable`)", plural(result.unreadable, "unreadable file")
            )
        arrived = [p for p in chunk if p not in known]
        changed = [p for p in chunk if p in known]
        for word, group in (("arrived", arrived), ("changed", changed)):
            if group:
                log.info("%s: %s", word, names(group))
        done.arrived += arrived
        done.changed += changed
        after_chunk()
    return done


def _one_by_one(
    db, embedder, paths: list[str], stopping: Callable[[], bool]
) -> tuple[index.ScanResult, list[str]]:
    """Index these files one at a time; returns the totals and the files that failed."""
    total = index.ScanResult()
    failed = []
    for path in paths:
        try:
            r = index.index_paths(db, [path], embedder, jobs=1, **_waiting(stopping))
        except Stopped:
            raise
        except Exception as e:
            log.warning("indexing %s failed (%s): tried again later", path, describe(e))
            failed.append(path)
            continue
        total.embedded += r.embedded
        total.unreadable += r.unreadable
        total.unchanged += r.unchanged
    return total, failed


def embed_names(db, embedder, paths: list[str]) -> int:
    """Embed the file names (a feature of the head) of renamed photos that have no vector yet, as a
    scan does for what it reads. Returns how many names were embedded."""
    model = embedder.model_id
    names = vectors.missing_names(db, model, [vectors.name_key(p) for p in paths])
    if names:
        found = embedder.embed_texts(names)
        with db.atomic():
            vectors.store(db, model, names=zip(names, found, strict=True))
    return len(names)


def reorder(db, top: int | None, oldest_first: bool, why: list[str], xmp_style: str | None = None):
    """Put the mtimes in score order, keeping the places of photos still in order, after bringing the
    near-duplicate groups up to date (see regroup); with `xmp_style`, the XMP ratings too. `why` names
    what changed since the last order (or says it is the start). Returns the OrderResult, or None when
    nothing is scored yet."""

    if not has_scores(db):
        return None
    regroup(db)
    # Photos still in order keep their times, 10 s apart when laid out: a new photo slides in
    # between two others (room for four there) and backups see a few changed files, not all.
    result = order(db, step=10.0, top=top, oldest_first=oldest_first, keep_places=True)
    for path, reason in result.failed:
        log.warning("order: %s: %s", path, reason)
    if result.touched:
        effect = f"{plural(result.touched, 'photo')} given a new mtime"
        effect += f", {result.in_place} already in place" if result.in_place else ""
    else:
        effect = f"all {plural(result.ordered, 'photo')} already in place"
    log.info("%s: %s", f"order updated after {names(why)}" if why else "order at start", effect)
    if xmp_style:
        rated = sidecars.write_ratings(db, photo_files(db), xmp_style, top)
        for path, reason in rated.failed:
            log.warning("xmp: %s: %s", path, reason)
        if rated.written:
            log.info("XMP ratings (%s): %d sidecars written", xmp_style, rated.written)
    return result


def regroup(db) -> dict:
    """Keep the near-duplicate groups current before an order, so a burst shows one keeper without
    `imgrank dupes`: new photos are compared with all, groups that lost a photo are formed again
    (dupes.refresh: cheap, and nothing when nothing arrived or went). Returns its summary."""

    done = dupes.refresh(db)
    if done["how"] != "unchanged":
        changes = [plural(done[k], f"{k} photo") for k in ("new", "gone") if done.get(k)]
        found = f"{plural(done['groups'], 'group')} of {plural(done['grouped'], 'photo')}"
        log.info(
            "near-duplicates looked at again%s: %s (%.1f s)",
            f" after {' and '.join(changes)}" if changes else "",
            found if done["groups"] else "none",
            done["seconds"],
        )
    return done
