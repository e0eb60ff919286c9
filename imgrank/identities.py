"""Which photo a record of imgrank's times belongs to, settled before `order` plans: the original
follows its photo wherever it went, and never goes to another photo that took its place.

- A record whose file was replaced by another (`mv -f` or a rename onto the ordered path: another
  inode, other content) is set apart: its photo is gone, and the one living there now is new.
- A file with no record that has the imgrank time and content of a record whose file is gone is
  that photo, moved (a rename nobody saw, a move to another file system, `cp -p a b && rm a`):
  the record follows it. Of several such files the one with the record's inode is the photo;
  the others are copies, new files with their own times.
- So is a file with no record that has the imgrank time and content of a photo given its original
  back lately whose file is gone since: a copy made before the restore (a move across disks by
  copy and delete, rsync --remove-source-files, that a restore saw halfway). Records given back are
  kept a day (owntimes.put_back). A record also keeps the last imgrank times it set (EARLIER), so
  a copy made several orders before its source went still tells that photo.
- A record of a file gone whose photo lives on with its original at another path (a copy made
  while it had its original) adds nothing and is dropped (`drop_held_elsewhere`).
- A root whose files all have their imgrank times moved by the same whole number of hours (a FAT
  disk mounted under another time zone) is reported and left out: those are not the owner's times.
- `find_moved` (for `restore`): where vanished files went, by imgrank time and content, under the
  roots; a file holding a vanished photo's original and content (a copy made while it had it) is
  taken too, where no file holds its imgrank time: given its own time back, nothing is left missing.

Records are changed only through owntimes, under its lock (the caller, `order`, holds it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from imgrank import fstimes
from imgrank.files import sha256_of, under
from imgrank.store import owntimes
from imgrank.store.owntimes import Record

# What `settle` and `find_moved` look for: a record whose file is gone, known by its path, and a
# record given back lately (owntimes.given_back) whose file is gone since, known by (GIVEN, its
# path). A photo can have both: given its original back while a copy of it was made, then ordered
# again before it went.
GIVEN = "given back"
Lost = str | tuple[str, str]


def settle(db, rows, stats: dict, records: dict[str, Record]) -> None:
    """Set apart the records of replaced photos and let moved photos take their records; `records`
    (path -> Record, as `order` read them) is updated in place. `rows` have .path; `stats` maps a
    path to (stat or None, why)."""
    for r in rows:
        st, rec = stats[r.path][0], records.get(r.path)
        if st is not None and rec is not None and owner_gone(rec, r.path, st):
            owntimes.set_aside(db, r.path, "another file was moved onto it")
            del records[r.path]
    take_over_copies(db, records)
    _follow_moves(db, rows, stats, records)
    # Records of files gone (not among the rows: a scan saw them go) whose photo lives on elsewhere.
    gone = {p: rec for p, rec in records.items() if p not in stats and _gone(p, rec)}
    if gone:
        present = {p: rec for p, rec in records.items() if p in stats and stats[p][0] is not None}
        for p in drop_held_elsewhere(db, gone, present):
            del records[p]


def _follow_moves(db, rows, stats: dict, records: dict[str, Record]) -> None:
    """Files without a record that are lost photos, moved, take their records (see settle)."""
    # Only a record with an imgrank time some file without a record has can be that file's: the
    # others are not even looked at on disk (an order of 100,000 photos costs no extra syscall).
    unrecorded = {r.path: st.st_mtime_ns for r in rows if r.path not in records and (st := stats[r.path][0])}
    times = set(unrecorded.values())
    if not times:
        return
    lost: dict[Lost, Record] = {
        p: rec for p, rec in records.items() if rec.sha256 and times.intersection(rec.set_times())
    }
    # A photo given its original back while a copy of it held imgrank's time, and gone since: the
    # copy is that photo (a move by copy and delete that a restore saw halfway).
    lost |= {(GIVEN, p): rec for p, rec in owntimes.given_back(db, times).items()}
    lost = {k: rec for k, rec in lost.items() if _gone(_path(k), rec)}
    moved = _by_content(unrecorded.items(), lost)
    for key in moved:
        records.pop(key, None)  # a followed record's old path (a key given back is no path)
    records |= take(db, moved, lost)


def drop_held_elsewhere(db, gone: dict[str, Record], present: dict[str, Record]) -> list[str]:
    """Forget those of these records whose files are gone (`gone`) whose photo lives on with its
    original at another path: a record of a file still there (`present`), or one given back lately
    whose file is there, has the same content and the same original. A copy made while the photo
    had its original, whose source was ordered again and then removed: its record adds nothing
    now. Returns their paths."""
    keys = {(rec.sha256, rec.original_ns) for rec in gone.values() if rec.sha256}
    held = keys & {(rec.sha256, rec.original_ns) for rec in present.values()}
    if keys - held:
        given = owntimes.given_back(db, contents={sha for sha, _ in keys - held})
        held |= keys & {(rec.sha256, rec.original_ns) for p, rec in given.items() if os.path.lexists(p)}
    done = [p for p, rec in gone.items() if (rec.sha256, rec.original_ns) in held]
    owntimes.forget(db, done)
    return done


def take(db, moved: dict[Lost, str], lost: dict[Lost, Record]) -> dict[str, Record]:
    """The files found (`moved`: what was lost -> where it is) take the records of the photos they
    are: a record follows its file, a record given back becomes the file's. Returns {path: record}."""
    out = {}
    for key, new in moved.items():
        if isinstance(key, tuple):
            owntimes.reclaim(db, key[1], new)
        else:
            owntimes.follow(db, key, new)
        out[new] = lost[key]
    return out


def given_back_and_gone(db) -> dict[Lost, Record]:
    """The records given back lately whose file is gone from a disk still mounted, keyed (GIVEN,
    path): for `restore` to look for where they went."""
    gone = [p for p in owntimes.given_back_paths(db) if not os.path.lexists(p)]
    return {(GIVEN, p): rec for p, rec in owntimes.given_back(db, paths=gone).items() if _gone(p, rec)}


def given_back_in(lost: Iterable[Lost]) -> list[str]:
    """The paths of the records given back among these."""
    return [k[1] for k in lost if isinstance(k, tuple)]


def _path(key: Lost) -> str:
    return key[1] if isinstance(key, tuple) else key


def _gone(path: str, rec: Record) -> bool:
    """Is the file gone from a disk that is still mounted (see _still_on_its_disk)?"""
    return not os.path.lexists(path) and _still_on_its_disk(path, rec)


def take_over_copies(db, records: dict[str, Record]) -> None:
    """A move by copy and delete (`cp -p a b && rm a`, a file manager moving across disks) that an
    order saw halfway, while both files were there: b was recorded as a new file whose original is
    imgrank's time for a. Once a is gone, b takes a's original; so does a copy made before a restore
    gave a its original back (a's record is then among those given back). `records` is updated in
    place."""
    given = owntimes.given_back(db, {rec.original_ns for rec in records.values()})
    by_time = {(rec.sha256, t): p for p, rec in given.items() for t in rec.set_times()}
    for path, rec in list(records.items()):
        old = by_time.pop((rec.sha256, rec.original_ns), None)
        if old is None or old in records or not _gone(old, given[old]) or not os.path.lexists(path):
            continue
        records[path] = dataclasses.replace(rec, original_ns=given[old].original_ns)
        owntimes.write(db, [(path, records[path])])
        owntimes.forget_given_back(db, [old])
    recs = records.values()
    originals = {rec.original_ns for rec in recs}
    if originals.isdisjoint({t for rec in recs for t in rec.set_times()}):
        return  # no record's original is another record's imgrank time (nearly always): nothing to take
    by_key: dict[tuple[str, int], str] = {}  # (content, imgrank time) -> whose record has it
    for p, rec in records.items():
        for t in rec.set_times() if rec.sha256 else ():
            by_key[(rec.sha256, t)] = p
    for path, rec in list(records.items()):
        old = by_key.get((rec.sha256, rec.original_ns))
        if old is None or old == path or old not in records or path not in records:
            continue
        if os.path.lexists(old) or not os.path.lexists(path) or not _still_on_its_disk(old, records[old]):
            continue
        records[path] = dataclasses.replace(rec, original_ns=records.pop(old).original_ns)
        owntimes.write(db, [(path, records[path])])
        owntimes.forget(db, [old])


def _still_on_its_disk(path: str, rec: Record) -> bool:
    """Is the disk the file was on mounted (its nearest folder still there is on the record's
    device)? A file on an unplugged disk is not gone: its copies elsewhere must not take its record."""
    if rec.dev is None:
        return True
    folder = os.path.dirname(path)
    while True:
        try:
            return os.stat(folder).st_dev == rec.dev
        except OSError:
            if folder == os.path.dirname(folder):
                return False
            folder = os.path.dirname(folder)


def shifted_roots(
    roots: list[str], stats: dict, records: dict[str, Record], warnings: list[str]
) -> list[str]:
    """The roots whose ordered files all have their imgrank times moved by the same whole number of
    hours; each is told in `warnings`."""
    present = [(p, st.st_mtime_ns, rec) for p, rec in records.items() if p in stats and (st := stats[p][0])]
    # Only a root with a file moved by whole hours can be one: most orders find none and stop here.
    moved = [
        p for p, t, rec in present if rec.set_ns not in (None, t) and (t - rec.set_ns) % fstimes.HOUR_NS == 0
    ]
    out = []
    for root in roots:
        if not any(under(p, root) for p in moved):
            continue
        pairs = [(t, rec.set_times()) for p, t, rec in present if under(p, root)]
        hours = fstimes.shifted_hours(pairs)
        if hours:
            out.append(root)
            warnings.append(
                f"the times of every photo ordered under {root} moved by {hours:+d} h since imgrank set "
                "them (a FAT disk mounted under another time zone?): nothing there is ordered or taken "
                "as the owner's; mount it as before, then `imgrank restore`"
            )
    return out


def owner_gone(rec: Record, path: str, st: os.stat_result) -> bool:
    """Was the file a record was made for replaced by another one (`mv -f`, a rename onto it)?
    Another inode and other content; the same content under a new inode (an editor's save-by-
    rename of an unchanged file, a copy back) is still the photo."""
    if rec.same_file(st) is not False:
        return False
    return rec.sha256 is not None and sha256_of(path) != rec.sha256


def find_moved(
    roots: Iterable[Path | str], lost: dict[Lost, Record], taken: set[str], walk
) -> dict[Lost, str]:
    """Where did these vanished files go? Walks the roots for files that still have imgrank's time
    for one of them (a move keeps it) or its original (a copy made while it had it, `cp -p a b`
    before an order touched a, whose source went since) and no record of their own (not in
    `taken`), and matches them by content; a file with imgrank's time goes first. Returns {what
    was lost: new path}. `walk(root)` yields the image files under a root."""
    times = {t for rec in lost.values() if rec.sha256 for t in _told_by(rec, originals=True)}
    if not times:
        return {}

    def candidates():
        for root in roots:
            for p in walk(root):
                p = str(p)
                st, _ = owntimes.lstat(p)
                if st is not None and st.st_mtime_ns in times and p not in taken:
                    yield p, st.st_mtime_ns

    return _by_content(candidates(), lost, originals=True)


def _by_content(
    candidates: Iterable[tuple[str, int]], lost: dict[Lost, Record], originals: bool = False
) -> dict[Lost, str]:
    """Which of these files ((path, mtime_ns), none with a record of its own) are the lost photos:
    one with a lost record's imgrank time (or, with `originals`, its original) and its content.
    Of several, the one with the record's inode (a move within a file system), else the first
    with an imgrank time, else the first (the others are copies). Only a file with such a time is
    read. Returns {what was lost: path}."""
    by_time: dict[int, list[Lost]] = {}
    for key, rec in lost.items():
        if rec.sha256:
            for t in _told_by(rec, originals):
                by_time.setdefault(t, []).append(key)
    if not by_time:
        return {}
    fits: dict[Lost, list[tuple[str, int]]] = {}  # what was lost -> files with its time and content
    for p, t in candidates:
        olds = by_time.get(t)
        if not olds:
            continue
        sha = sha256_of(p)
        for old in olds:
            if lost[old].sha256 == sha:
                fits.setdefault(old, []).append((p, t))
    found: dict[Lost, str] = {}
    taken: set[str] = set()
    for old in sorted(fits, key=lambda o: not any(_same(lost[o], p) for p, _ in fits[o])):
        # A file holding the original only if none holds imgrank's time (sorted is stable).
        files = sorted(fits[old], key=lambda pt: pt[1] == lost[old].original_ns)
        new = owntimes.pick(lost[old], [p for p, _ in files if p not in taken])
        if new is not None:
            found[old] = new
            taken.add(new)
    return found


def _told_by(rec: Record, originals: bool) -> tuple[int, ...]:
    """The times a file may have that, with the content, tell it for this record's photo."""
    return (*rec.set_times(), rec.original_ns) if originals else rec.set_times()


def _same(rec: Record, path: str) -> bool:
    st, _ = owntimes.lstat(path)
    return st is not None and bool(rec.same_file(st))
