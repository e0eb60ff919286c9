"""Debouncing for the daemon: when a written file is complete, and when a burst of deletions ends.

Pure bookkeeping over (path, time, stat) — no threads, no observer — so it is easy to test.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

# After a close-for-writing, wait this long for more writes before reading (a writer that
# reopens the file for each chunk closes it many times).
CLOSE_GRACE = 0.5


def stat_key(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file, or None if it is gone or not a file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not (st.st_mode & 0o170000 == 0o100000):
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class _Pending:
    due: float  # when to look again
    key: tuple[int, int] | None  # (size, mtime_ns) when last looked
    closed: bool = False


class Settler:
    """Files being written. A file is ready once closed for writing and quiet for a moment, or once
    its size and mtime have not changed for `settle` seconds. Each ready file is handed out once."""

    def __init__(self, settle: float):
        self.settle = settle
        self.grace = min(CLOSE_GRACE, settle)
        self.pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def touch(self, path: str, now: float, closed: bool = False) -> None:
        """A write (or close, or arrival by rename) was seen on `path`."""
        p = self.pending.get(path)
        key = stat_key(path)
        if p is None:
            p = self.pending[path] = _Pending(due=now, key=key)
        p.closed = closed
        p.key = key
        p.due = now + (self.grace if closed else self.settle)

    def rename(self, src: str, dst: str, now: float) -> bool:
        """A pending file was renamed (e.g. `photo.jpg.part` -> `photo.jpg`); True if it was pending."""
        if self.pending.pop(src, None) is None:
            return False
        self.touch(dst, now, closed=True)  # a rename publishes a finished file
        return True

    def forget(self, path: str) -> bool:
        return self.pending.pop(path, None) is not None

    def next_due(self) -> float | None:
        return min((p.due for p in self.pending.values()), default=None)

    def ready(self, now: float) -> list[str]:
        """Files whose wait is over and whose size and mtime held still; they leave the pending set."""
        out = []
        for path, p in list(self.pending.items()):
            if p.due > now:
                continue
            key = stat_key(path)
            if key is None:  # gone (deleted, or renamed away without an event we matched)
                del self.pending[path]
            elif key != p.key:  # still being written: wait the full settle time again
                p.key, p.closed, p.due = key, False, now + self.settle
            else:
                del self.pending[path]
                out.append(path)
        return sorted(out)


@dataclass
class DeleteBurst:
    """Deletions that arrive together. The burst ends `settle` seconds after its first deletion and
    at least `gap` seconds after its last, so `rm -r` of a folder is one burst."""

    settle: float
    files: dict[str, float] = field(default_factory=dict)  # path -> when it went (time.time())
    dirs: set[str] = field(default_factory=set)
    first: float | None = None
    last: float = 0.0

    @property
    def gap(self) -> float:
        return min(CLOSE_GRACE, self.settle)

    def add(self, path: str, now: float, is_dir: bool = False, went_at: float | None = None) -> None:
        """A deletion seen at `now` (monotonic); `went_at`: when it was reported (time.time())."""
        if self.first is None:
            self.first = now
        self.last = now
        if is_dir:
            self.dirs.add(path)
        else:
            self.files[path] = time.time() if went_at is None else went_at

    def due(self) -> float | None:
        if self.first is None:
            return None
        return max(self.first + self.settle, self.last + self.gap)

    def take(self) -> tuple[dict[str, float], set[str]]:
        files, dirs = self.files, self.dirs
        self.files, self.dirs, self.first, self.last = {}, set(), None, 0.0
        return files, dirs
