"""What a burst of deletions means: a photo the owner deleted one by one is a judgement (a `delete`
label); a folder wiped, a burst larger than `max_burst`, or a root that went offline is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from imgrank import index, pairs
from imgrank.daemon.debounce import stat_key
from imgrank.files import under
from imgrank.store import labels, owntimes
from imgrank.trash import trashed

log = logging.getLogger("imgrank.daemon")

# A scan that marked a path missing at most this long before its deletion was reported saw the
# same deletion (the observer reports within milliseconds; the rest is room for a busy machine).
SCAN_SLACK = 2.0


@dataclass
class Judgement:
    judged: dict[str, float] = field(default_factory=dict)  # path -> time.time() it went: a judgement
    wiped: set[str] = field(default_factory=set)  # gone with a folder or a mass deletion: no labels
    replaced: list[str] = field(default_factory=list)  # there again: changed in place, not deleted


@dataclass
class Outcome:
    deleted: list[str] = field(default_factory=list)  # photos judged deleted
    labelled: list[str] = field(default_factory=list)  # those given a `delete` label
    moved: int = 0  # content still present at another path (a move inotify could not pair)
    elsewhere: list[str] = field(default_factory=list)  # those paths: moved, or one of exact copies
    trashed: list[str] = field(default_factory=list)  # deleted by `imgrank trash` (labelled there)
    ignored: int = 0  # marked missing without a label (folder wiped, mass deletion)

    def report(self, counters: dict) -> None:
        """Log one line per photo, naming it, then add to the daemon's counters (in that order: whoever
        waits on a counter, as `status` and the tests do, finds the lines written)."""
        for path in self.deleted:
            how = " (labelled delete)" if path in self.labelled else ""
            log.info("deleted: %s%s", path, " (by imgrank trash)" if path in self.trashed else how)
        for path in self.elsewhere:
            log.info("gone: %s (the same photo is at another path: moved, or an exact copy; no label)", path)
        counters["ignored_deletions"] += self.ignored
        counters["moved"] += self.moved
        counters["deleted"] += len(self.deleted)
        counters["labels"] += len(self.labelled)


def judge(
    db, files: dict[str, float], dirs: set[str], online: Callable[[str], bool], max_burst: int
) -> Judgement:
    """Sort a burst: `files` maps each deleted path to when it went (time.time()), `dirs` the
    folders deleted; `online(path)` says whether its root is online (else nothing is judged)."""
    j = Judgement()
    for path, at in files.items():
        if stat_key(path) is not None:  # replaced in place: a change, not a deletion
            j.replaced.append(path)
        elif online(path):
            if any(under(path, d) for d in dirs):
                j.wiped.add(path)
            else:
                j.judged[path] = at
    for d in dirs:
        if online(d):
            j.wiped.update(index.present_under(db, d))
    if j.wiped and dirs:
        names = ", ".join(sorted(dirs))
        log.info("a folder was deleted (%s): %d photos marked missing, no labels", names, len(j.wiped))
    if len(j.judged) > max_burst:
        log.warning(
            "%d photos deleted at once (more than --max-delete-burst %d): marked missing, no labels",
            len(j.judged),
            max_burst,
        )
        j.wiped.update(j.judged)
        j.judged = {}
    return j


def apply(db, j: Judgement, learn: bool) -> Outcome:
    """Mark what went missing; label each photo judged deleted `delete` (when `learn`)."""

    out = Outcome()
    ours = trashed(db, list(j.judged))  # `imgrank trash` moved these: labelled there, not again here
    # Under the mtimes lock: the record of a photo that moved follows it (see index.follow_moved).
    with owntimes.locked(db), db.atomic():
        for path in j.wiped:
            if index.mark_missing(db, path):
                out.ignored += 1
        for path, at in j.judged.items():
            sha = index.mark_missing(db, path, since=at - SCAN_SLACK)  # a scan may have been first
            if sha is None:
                continue
            if index.drop_if_moved(db, path, sha):
                index.follow_moved(db, path, sha)  # to another root or file system: its original goes too
                out.moved += 1
                out.elsewhere.append(path)
                continue
            out.deleted.append(path)
            if path in ours:
                out.trashed.append(path)
            if learn and len(pairs.members(path)) > 1:  # the other file of its RAW+JPEG pair is kept
                continue
            if learn and path not in ours:
                labels.set_label(db, sha, "delete", "deleted", path)
                out.labelled.append(path)
    return out
