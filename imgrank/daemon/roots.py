"""The photo roots as the daemon sees them: the observer on each, which are online or offline (an
unplugged disk), and what a watchdog event means for imgrank (a `Change`).

The observer's threads only put raw events (with the time they came) on the loop's queue;
`Roots.classify` turns each into a `Written`, `Renamed` or `Left` in the loop's thread, so all
the work happens in one place.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog import events as ev
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from imgrank.files import is_image_name, under

log = logging.getLogger("imgrank.daemon")

INOTIFY_HINT = (
    "inotify watch limit reached: raise it with `sudo sysctl fs.inotify.max_user_watches=524288` "
    "(add `fs.inotify.max_user_watches=524288` to /etc/sysctl.d/90-imgrank.conf to keep it); "
    "falling back to polling"
)
EVENTS = [
    ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent, ev.FileMovedEvent,
    ev.FileDeletedEvent, ev.DirMovedEvent, ev.DirDeletedEvent, ev.DirCreatedEvent,
]  # fmt: skip


@dataclass(frozen=True)
class Written:
    """A photo under an online root was created or written (`closed`: closed after writing)."""

    path: str
    closed: bool


@dataclass(frozen=True)
class Renamed:
    """A file moved within the roots; `wanted`: its new path is a photo imgrank indexes."""

    src: str
    dest: str
    wanted: bool


@dataclass(frozen=True)
class Left:
    """A file or folder left view: deleted, or moved out of the roots (e.g. to the trash).
    `judged`: it may be a deletion to learn from (a photo name, or a folder, under a root)."""

    path: str
    is_dir: bool = False
    judged: bool = True


Change = Written | Renamed | Left


class _Handler(ev.FileSystemEventHandler):
    def __init__(self, q: queue.Queue):
        self.q = q

    def on_any_event(self, event: ev.FileSystemEvent) -> None:
        self.q.put((time.time(), event))  # when it was reported: a scan may act on it before the loop


class Roots:
    """The watched roots, their observer, and which of them are offline."""

    def __init__(self, roots: list[Path], events: queue.Queue, polling: bool, settle: float):
        self.roots = [Path(r) for r in roots]
        self.events = events
        self.polling = polling
        self.settle = settle
        self.offline: set[Path] = set()
        self.devices: dict[Path, int] = {}  # st_dev when caught up: another device means unmounted
        self.watches: dict[Path, object] = {}
        self.observer = None

    # --- where a path belongs ----------------------------------------------------------------

    def root_of(self, path: str) -> Path | None:
        """The innermost root that holds `path`, online or not."""
        best = None
        for r in self.roots:
            if under(path, r) and (best is None or len(str(r)) > len(str(best))):
                best = r
        return best

    def online(self, path: str) -> bool:
        root = self.root_of(path)
        return root is not None and root not in self.offline

    def wanted(self, path: str) -> bool:
        """An image file under an online root, not in a hidden folder."""
        root = self.root_of(path)
        if root is None or root in self.offline:
            return False
        parts = Path(path).relative_to(root).parts
        return is_image_name(parts[-1]) and not any(p.startswith(".") for p in parts[:-1])

    def classify(self, event: ev.FileSystemEvent) -> Change | None:
        """What a watchdog event means for imgrank; None when it needs no work (attribute-only
        changes such as imgrank's own mtimes, opens, reads, new folders, files outside the roots)."""
        src = os.fsdecode(event.src_path)
        kind = type(event)
        if kind in (ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent):
            return Written(src, kind is ev.FileClosedEvent) if self.wanted(src) else None
        if kind is ev.FileDeletedEvent:
            return Left(src, judged=self.root_of(src) is not None and is_image_name(os.path.basename(src)))
        if kind is ev.FileMovedEvent:
            dest = os.fsdecode(event.dest_path)
            if dest and self.root_of(dest) is not None:
                return Renamed(src, dest, self.wanted(dest))
            return Left(src) if self.root_of(src) is not None else None
        if kind is ev.DirDeletedEvent:
            return Left(src, is_dir=True)
        if kind is ev.DirMovedEvent:
            dest = os.fsdecode(event.dest_path)
            if not dest or self.root_of(dest) is None:  # moved out of the roots: gone from view
                return Left(src, is_dir=True)
            # within the roots watchdog also reports each file inside as moved
        return None

    # --- the observer ------------------------------------------------------------------------

    def start_observer(self) -> None:
        """Watch every online root; fall back to polling (and say how to fix it) when inotify is full."""
        self.observer = PollingObserver(timeout=max(1.0, self.settle)) if self.polling else Observer()
        try:
            for r in self.roots:
                if r not in self.offline:
                    self._schedule(r)
            self.observer.start()
        except OSError as e:
            if self.polling or e.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.warning(INOTIFY_HINT)
            self.stop_observer()
            self.polling = True
            self.start_observer()

    def _schedule(self, root: Path) -> None:
        handler = _Handler(self.events)
        self.watches[root] = self.observer.schedule(handler, str(root), recursive=True, event_filter=EVENTS)

    def stop_observer(self) -> None:
        obs, self.observer = self.observer, None
        self.watches.clear()
        if obs is None:
            return
        obs.stop()
        if obs.is_alive():
            obs.join(timeout=3)

    # --- online and offline ------------------------------------------------------------------

    def go_offline(self, root: Path, why: str) -> None:
        """Stop watching a root that vanished: nothing under it is judged until it is back."""
        if root in self.offline:
            return
        self.offline.add(root)
        log.warning(
            "root %s is %s (unmounted?): nothing learnt from what vanished; waiting for it", root, why
        )
        watch = self.watches.pop(root, None)
        if watch is not None and self.observer is not None:
            try:
                self.observer.unschedule(watch)
            except Exception:
                pass

    def caught_up(self, roots: list[Path]) -> None:
        """These roots were just scanned: remember their device, to notice an unmount later."""
        for r in roots:
            self.devices[r] = r.stat().st_dev

    def check(self, registered: list[Path]) -> list[Path]:
        """Pick up roots registered since the start and notice roots gone or back. Returns the
        roots that need a catch-up scan (new ones and ones back online)."""
        todo = [r for r in registered if r not in self.roots and self._add(r)]
        for r in self.roots:
            try:
                dev = r.stat().st_dev if r.is_dir() else None
            except OSError:
                dev = None
            if r not in self.offline:
                if dev is None:
                    self.go_offline(r, "gone")
                elif self.devices.get(r, dev) != dev:
                    self.go_offline(r, "on another device now")
            elif dev is not None and self.devices.get(r, dev) == dev:
                log.info("root %s is back: catching up", r)
                self.offline.discard(r)
                if self.observer is not None:
                    self._schedule(r)
                todo.append(r)
        return todo

    def _add(self, root: Path) -> bool:
        """A folder registered since the daemon started (`imgrank scan NEWROOT`): watch it too.
        True if it is there to catch up with."""
        log.info("new photo folder %s: watching it", root)
        self.roots.append(root)
        if not root.is_dir():
            self.go_offline(root, "not there")
            return False
        if not os.access(root, os.W_OK):
            log.warning(
                "%s is read-only here: photos are indexed and scored but not ordered (for the "
                "systemd service, run `imgrank service install` again and restart it)",
                root,
            )
        if self.observer is not None:
            self._schedule(root)
        return True
