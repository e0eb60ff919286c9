"""Plan file mtimes in score order, so a viewer sorted by date shows the least-wanted first; restore them.

Nothing may be lost on the way. Before a file's mtime is changed, its record (imgrank.owntimes)
is written, in one transaction: its original mtime (kept across later orders), the time about to
be set, and the imgrank time it has now, if any. Only then are the files touched. So whatever a
crash leaves on disk is one of three times the database knows: the original, the previous imgrank
time or the new one; rerunning `order` or `restore` recognises all three. Any other time means
someone else changed the file: that time becomes its original. Every order and restore runs under
the mtimes lock (owntimes.locked), reading the records only once it holds it, so two of them (or
the daemon's reorder and a command) never interleave.

The `files` rows keep the files' own times; a scan takes a time recorded here as imgrank's own
and sees no change (no re-hash, no re-embed).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import gc
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import sqlite_utils

from imgrank import fstimes, identities, index
from imgrank.errors import Unfinished, describe
from imgrank.files import under, walk
from imgrank.order_results import OrderResult, RestoreResult
from imgrank.ranking import Ranked, ranked, ranked_with_partners
from imgrank.store import owntimes
from imgrank.store.owntimes import Record, lstat

__all__ = ["OrderResult", "Ranked", "RestoreResult", "order", "ranked", "restore"]

# The least gap between two ordered files with --keep-places: FAT keeps mtimes to 2 seconds.
MIN_GAP_NS = 2 * 10**9


def _own_time(path: str, records: dict[str, Record]) -> int:
    """The file's own mtime: the original imgrank recorded, else the one on disk."""
    if path in records:
        return records[path].original_ns
    st, _ = lstat(path)
    return st.st_mtime_ns if st else time.time_ns()


def _targets(current: list[int | None], step_ns: int, end_ns: int, gap_ns: int | None = None) -> list[int]:
    """The mtime for each place, newest first (place 0 gets the newest), never after `end_ns`.

    With nothing known (`current` all None) the times are whole steps apart, ending at
    `end_ns`. `current[i]` is the imgrank time the file for place i has now, if it is to be
    kept where it can: then as many files as possible keep theirs (the longest run of them in
    order with room between each two for the files placed between them, at least `gap_ns`
    apart), and only the rest move. So a deletion moves nothing; with a gap smaller than the
    step, a photo that arrives or changes place slides in between two others, and otherwise
    the files on the shorter side of the change move.
    """
    n = len(current)
    gap = gap_ns or step_ns
    # Keeping places i < j needs current[i] - current[j] >= (j - i) * gap, i.e. d[i] >= d[j]
    # with d = current + place * gap, and room above the first up to end_ns (d <= end_ns): the
    # longest non-increasing run of d, by patience sorting on -d.
    tails: list[int] = []  # -d at the end of the best run of each length
    ends: list[int] = []  # the place it ends at
    parent = [-1] * n
    for i, c in enumerate(current):
        if c is None or c + i * gap > end_ns:
            continue
        key = -(c + i * gap)
        k = bisect.bisect_right(tails, key)
        parent[i] = ends[k - 1] if k else -1
        if k == len(tails):
            tails.append(key)
            ends.append(i)
        else:
            tails[k], ends[k] = key, i
    kept = []
    i = ends[-1] if ends else -1
    while i >= 0:
        kept.append(i)
        i = parent[i]
    kept.reverse()
    if not kept:
        return [end_ns - i * step_ns for i in range(n)]

    t = [0] * n
    for i in kept:
        t[i] = current[i]

    def fill(a: int, b: int, top: int, bottom: int) -> None:
        """Places a+1 .. b-1, strictly between the times top and bottom: a step apart just
        below top where there is room, else spread evenly on whole gaps."""
        m = b - a - 1
        spaced = top - bottom >= (m + 1) * step_ns
        for k in range(1, m + 1):
            t[a + k] = top - k * (step_ns if spaced else (top - bottom) // (m + 1) // gap * gap)

    first, last = kept[0], kept[-1]
    if first:  # above the first kept file: up to end_ns, the newest at end_ns if there is room
        room = end_ns + step_ns - t[first] >= (first + 1) * step_ns
        fill(-1, first, end_ns + (step_ns if room else gap), t[first])
    for a, b in zip(kept, kept[1:], strict=False):
        fill(a, b, t[a], t[b])
    for i in range(last + 1, n):  # below the last kept file
        t[i] = t[last] - (i - last) * step_ns
    return t


def _without_cyclic_gc(fn):
    """Bulk work makes 100,000s of small objects that live to its end; the cyclic collector would
    walk them again and again for nothing (a quarter of `order`'s time at 100,000 files)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


@_without_cyclic_gc
def order(
    db: sqlite_utils.Database,
    step: float = 2.0,
    top: int | None = None,
    oldest_first: bool = False,
    dry_run: bool = False,
    now_ns: int | None = None,
    keep_places: bool = False,
) -> OrderResult:
    """Set the mtimes of the scored images under the roots in score order (see the module text).

    With `top`, only the `top` least-wanted are ordered; files imgrank ordered before that are
    no longer among them get their own times back. With `keep_places`, files whose imgrank time
    is still in order keep it and only the others move (see _targets): for the daemon's frequent
    reorders, so backups see a few changed files instead of all of them.
    """
    result = OrderResult(dry_run=dry_run)
    with owntimes.locked(db), _unfinished(result):
        _order(db, result, step, top, oldest_first, now_ns, keep_places)
    return result


@contextlib.contextmanager
def _unfinished(result):
    """An OS or SQLite error part-way (a full disk) raises Unfinished carrying what was done."""
    try:
        yield
    except (OSError, sqlite3.Error) as e:
        raise Unfinished(describe(e), result) from e


def _order(
    db: sqlite_utils.Database,
    result: OrderResult,
    step: float,
    top: int | None,
    oldest_first: bool,
    now_ns: int | None,
    keep_places: bool,
) -> None:
    start = time.monotonic()
    dry_run = result.dry_run
    step_ns = max(1, round(step * 1e9))
    rows, partners = ranked_with_partners(db)  # the other files of a RAW+JPEG pair share its time
    chosen, rest = (rows, []) if top is None else (rows[:top], rows[top:])
    shared = [Ranked(p, r.score, r.label, sha) for r in chosen for p, sha in partners.get(r.path, ())]
    lead_of = {p: r.path for r in chosen for p, _ in partners.get(r.path, ())}
    roots = [str(r) for r in index.list_roots(db)]
    if not dry_run:
        fstimes.check_step(step_ns, [r for r in roots if any(under(p.path, r) for p in chosen)])
    records = owntimes.records(db)
    now_ns = now_ns or time.time_ns()
    if oldest_first and rest:  # the ordered ones go just before the rest's own times
        end_ns = min(_own_time(r.path, records) for r in rest) - step_ns
    else:
        end_ns = now_ns
    end_ns = end_ns // step_ns * step_ns
    result.ordered = len(chosen)

    # Files go in path order from here on: neighbours on disk are neighbours in the kernel's
    # caches (a third faster than score order).
    in_path_order = sorted(chosen + shared)
    stats = {r.path: lstat(r.path) for r in in_path_order}
    if not dry_run:
        identities.settle(db, in_path_order, stats, records)
    shifted = identities.shifted_roots(roots, stats, records, result.warnings)
    # A photo given its original back lately and ordered again: its record goes on with the times
    # imgrank set before (a copy made with one of them still tells that photo: identities).
    revived = owntimes.given_back(db, paths=[r.path for r in in_path_order if r.path not in records])
    places = [r.path for r in (chosen[::-1] if oldest_first else chosen)]  # newest time first
    current = [None] * len(places)
    if keep_places:  # the time a file has now, if it is the one imgrank set last
        for i, path in enumerate(places):
            st, rec = stats[path][0], records.get(path)
            if st and rec and st.st_mtime_ns == rec.set_ns:
                current[i] = st.st_mtime_ns
    gap_ns = min(step_ns, MIN_GAP_NS)
    targets = dict(zip(places, _targets(current, step_ns, end_ns, gap_ns), strict=True))
    targets.update({p: targets[lead] for p, lead in lead_of.items()})

    # Plan each file's new record; nothing is written yet.
    plans = []  # (path, stat, new record)
    for path, score, _, sha in in_path_order:
        target = targets[path]
        st, why = stats[path]
        if st is None:
            (result.skipped if why == owntimes.VANISHED else result.failed).append((path, why))
            continue
        if shifted and any(under(path, r) for r in shifted):
            result.skipped.append((path, "its root's times moved by whole hours: not ordered there"))
            continue
        if st.st_mtime_ns == target:
            result.in_place += 1
            continue
        rec = records.get(path) or revived.get(path)
        if rec is not None and rec.ours(st.st_mtime_ns):
            original = rec.original_ns
            prev = st.st_mtime_ns if st.st_mtime_ns != rec.original_ns else None
            earlier = rec.history(target, prev)
        else:  # never touched, or changed by someone else since: today's time is its own
            original, prev, earlier = st.st_mtime_ns, None, ()
        plans.append((path, st, Record(original, target, prev, sha, st.st_dev, st.st_ino, earlier)))
        if dry_run:
            result.plan.append(
                {"path": path, "score": score, "mtime_ns": st.st_mtime_ns, "new_mtime_ns": target}
            )
    if dry_run:
        result.plan.sort(key=lambda p: -p["new_mtime_ns"] if not oldest_first else p["new_mtime_ns"])
        result.touched = len(plans)
        result.seconds = time.monotonic() - start
        return

    # Record first, then touch. A failed touch puts that file's record back as it was; a time the
    # file system did not keep exactly is recorded as what it holds (still imgrank's own).
    owntimes.write(db, [(path, rec) for path, _, rec in plans])
    undo, held = [], []
    with owntimes.Toucher() as toucher:
        for path, st, rec in plans:
            why = toucher.touch(path, st.st_atime_ns, rec.set_ns, read=st)
            if why is None:
                result.touched += 1
                if toucher.held_ns is not None and toucher.held_ns != rec.set_ns:
                    held.append((path, dataclasses.replace(rec, set_ns=toucher.held_ns)))
                continue
            (result.skipped if why in (owntimes.VANISHED, owntimes.CHANGED) else result.failed).append(
                (path, why)
            )
            undo.append(path)
    owntimes.write(db, held)
    if undo:
        owntimes.write(db, [(p, records[p]) for p in undo if p in records])
        owntimes.forget(db, [p for p in undo if p not in records])
    if revived:  # their records go on in the new ones
        kept = set(undo)
        owntimes.forget_given_back(db, [p for p, _, _ in plans if p in revived and p not in kept])

    # Files imgrank ordered before that are no longer in the order get their own times back
    # (those not on disk now are left for `restore`, which looks for where they went).
    chosen_paths = {r.path for r in chosen + shared}
    others = {p: r for p, r in records.items() if p not in chosen_paths and os.path.lexists(p)}
    if others:
        back = _give_back(db, others)
        result.restored = back.restored
        result.failed += back.failed
    result.seconds = time.monotonic() - start


@_without_cyclic_gc
def restore(
    db: sqlite_utils.Database,
    paths: Iterable[str | Path] | None = None,
    force: bool = False,
    forget_missing: bool = False,
) -> RestoreResult:
    """Put original mtimes back (all, or of files under `paths`) and forget those records.

    Only where the file still has a time imgrank set: a file changed since is reported and left
    alone, its record kept, unless `force`. A file that is not where it was is looked for under
    the roots (by its imgrank time and content: a move nobody scanned yet) and restored where it
    is now; one not found is reported and its record kept (it may be on a disk that is not
    mounted), unless `forget_missing`. So is a photo given its original back lately whose file is
    gone since, where a copy made before still holds imgrank's time (identities.settle). A record
    whose photo lives on with its original elsewhere (a copy made while it had it) just goes.
    """

    wanted = None if paths is None else [str(Path(p).expanduser().resolve()) for p in paths]
    start = time.monotonic()
    result = RestoreResult()
    with owntimes.locked(db), _unfinished(result):
        records = owntimes.records(db, wanted)
        if wanted is None:
            identities.take_over_copies(db, records)
        _give_back(db, records, force, result)
        lost: dict[identities.Lost, Record] = {p: records[p] for p in result.missing}
        if wanted is None:  # given their originals back (now or lately) and gone since: see settle
            lost |= identities.given_back_and_gone(db)
        if lost:  # moved before any scan saw it? Look for it by time and content.
            taken = set(owntimes.records(db))  # the files restored or set apart are free now
            moved = identities.find_moved(index.list_roots(db), lost, taken, walk)
            missing, result.missing = result.missing, []
            _give_back(db, identities.take(db, moved, lost), force, result)
            result.followed = len(moved)
            result.missing = [p for p in missing if p not in moved] + result.missing
        if result.missing:  # a photo whose original another file already has: nothing to keep
            gone = {p: records[p] for p in result.missing if p in records}
            present = {p: rec for p, rec in records.items() if p not in gone}
            done = identities.drop_held_elsewhere(db, gone, present)
            result.already += len(done)
            result.missing = [p for p in result.missing if p not in done]
        result.gone = [
            p for p, _ in owntimes.set_apart(db) if wanted is None or any(under(p, w) for w in wanted)
        ]
        if forget_missing:
            owntimes.forget(db, result.missing)
            if wanted is None:
                owntimes.forget_given_back(db, identities.given_back_in(lost))
            n = owntimes.forget_set_apart(db) if wanted is None else 0
            result.forgotten, result.missing, result.gone = len(result.missing) + n, [], []
    result.seconds = time.monotonic() - start
    return result


def _give_back(
    db: sqlite_utils.Database,
    records: dict[str, Record],
    force: bool = False,
    result: RestoreResult | None = None,
) -> RestoreResult:
    """Put these files' original times back (under the lock) and drop their records; files not
    there are listed in `missing`, their records kept. A file another one replaced (moved onto
    its path) never gets its original: that record is set apart (owntimes.set_aside)."""
    result = result if result is not None else RestoreResult()
    done = []  # (path, record) of the records that go
    with owntimes.Toucher() as toucher:
        for path in sorted(records):
            rec = records[path]
            st, why = toucher.look(path)  # read through the descriptor the touch below goes through
            if st is None and why == owntimes.VANISHED:
                result.missing.append(path)
                continue
            if st is None:
                result.failed.append((path, why))
                continue
            if identities.owner_gone(rec, path, st):
                owntimes.set_aside(db, path, "another file was moved onto it")
                continue
            if st.st_mtime_ns == rec.original_ns:
                result.already += 1
                done.append((path, rec))
                continue
            if not rec.ours(st.st_mtime_ns) and not force:
                result.failed.append(
                    (path, "changed since imgrank ordered it: left alone (--force restores anyway)")
                )
                continue
            why = toucher.touch(path, st.st_atime_ns, rec.original_ns, read=st)
            if why == owntimes.VANISHED:
                result.missing.append(path)
                continue
            if why is not None:
                result.failed.append((path, why))
                continue
            result.restored += 1
            done.append((path, rec))
            if len(done) >= 5000:  # what is put back is forgotten as it goes: an error later keeps it
                owntimes.put_back(db, done)
                done = []
    owntimes.put_back(db, done)
    return result
