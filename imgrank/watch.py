"""The daemon: catch up, then watch the roots; index what settles, learn from deletions, keep order fresh.

One thread (the caller's) owns the database and does all the work; the observer's threads only
put events on a queue, and the loop blocks on that queue until the next deadline, so an idle
daemon costs nothing beyond the observer. torch is never imported here: scoring is numpy
(imgrank.model) and retraining runs as a separate, low-priority process.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog import events as ev
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from imgrank import config
from imgrank.debounce import DeleteBurst, Settler, stat_key
from imgrank.errors import ImgrankError

log = logging.getLogger("imgrank.watch")

CHUNK = 64  # files per index call: the stop flag is checked between chunks
STALE_AFTER = 3  # heartbeats missed before `status` calls the daemon dead
INOTIFY_HINT = (
    "inotify watch limit reached: raise it with `sudo sysctl fs.inotify.max_user_watches=524288` "
    "(add `fs.inotify.max_user_watches=524288` to /etc/sysctl.d/90-imgrank.conf to keep it); "
    "falling back to polling"
)
EVENTS = [
    ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent, ev.FileMovedEvent,
    ev.FileDeletedEvent, ev.DirMovedEvent, ev.DirDeletedEvent, ev.DirCreatedEvent,
]  # fmt: skip


@dataclass
class WatchConfig:
    settle: float = 2.0  # seconds a file's size and mtime must hold still (without a close event)
    reorder_interval: float = 30.0  # at most one reorder per this many seconds
    top: int | None = None  # order only the N least-wanted (as `imgrank order --top N`)
    oldest_first: bool = False  # as `imgrank order --oldest-first`
    retrain_after: int = 20  # new labels before retraining in the background
    learn_from_deletes: bool = True
    max_delete_burst: int = 20  # more deletions than this in one burst: a folder wipe, no labels
    polling: bool = False
    heartbeat: float = 10.0
    model: str | None = None


class Stopped(Exception):
    """Raised inside long work when a stop was asked for."""


class _Handler(ev.FileSystemEventHandler):
    def __init__(self, q: queue.Queue):
        self.q = q

    def on_any_event(self, event: ev.FileSystemEvent) -> None:
        self.q.put(event)


def _under(path: str, folder: str | Path) -> bool:
    return path.startswith(str(folder).rstrip(os.sep) + os.sep)


class Watcher:
    """`run()` until `stop()`; usable in a thread (tests) or the main thread (the CLI)."""

    def __init__(self, roots: list[Path], cfg: WatchConfig | None = None):
        self.roots = [Path(r) for r in roots]
        self.cfg = cfg or WatchConfig()
        self.queue: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set once caught up and watching
        self.counters = {
            "events": 0, "indexed": 0, "embedded": 0, "moved": 0, "deleted": 0, "labels": 0,
            "ignored_deletions": 0, "scored": 0, "reorders": 0, "retrains": 0, "errors": 0,
            "batches": 0, "torch_loaded": False,
        }  # fmt: skip
        self.started_at = time.time()
        self.settler = Settler(self.cfg.settle)
        self.deletes = DeleteBurst(self.cfg.settle)
        self.held: list[str] = []  # settled files waiting for the rest of a burst
        self.held_since = 0.0
        self.offline: set[Path] = set()
        self.devices: dict[Path, int] = {}
        self.watches: dict[Path, object] = {}
        self.observer = None
        self.dirty_since: float | None = None
        self.rescore = False
        self.last_order = float("-inf")  # the first change is ordered at once
        self.last_beat = 0.0
        self.retrain: subprocess.Popen | None = None
        self.label_mark = 0
        self.said: set[str] = set()

    # --- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: safe from any thread (not from a signal handler: see run_watch)."""
        self.stopping.set()
        self.queue.put(None)

    def run(self) -> dict:
        from imgrank.db import open_db
        from imgrank.embed import load_embedder
        from imgrank.index import add_roots

        self.db = db = open_db()
        _refuse_second_daemon(db)
        add_roots(db, [r for r in self.roots if r.is_dir()])  # what it indexes is under a root
        self.embedder = load_embedder(self.cfg.model)
        self._beat(force=True)
        try:
            for r in self.roots:
                if not r.is_dir():
                    self._go_offline(r, "not there")
            # Watch first, then catch up: nothing that happens in between is missed.
            self._start_observer()
            self._catch_up([r for r in self.roots if r not in self.offline])
            self.ready.set()
            self.label_mark = self._label_count_at_last_run()
            self._loop()
        except Stopped:
            pass
        finally:
            self._shutdown()
        return dict(self.counters)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            deadline = self._next_deadline()
            try:
                first = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                first = None
            batch = [first]
            while len(batch) < 10_000:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            for event in batch:
                if event is not None:
                    self._guard(self._intake, event)
            if not self.stopping.is_set():
                self._guard(self._tick)

    def _guard(self, fn, *args) -> None:
        """A failure (one bad file, a locked database) is logged and counted; the daemon goes on."""
        try:
            fn(*args)
        except Stopped:
            raise
        except Exception:
            self.counters["errors"] += 1
            log.exception("error (the daemon goes on)")

    def _next_deadline(self) -> float:
        now = time.monotonic()
        times = [self.last_beat + self._beat_interval()]
        if self.settler:
            times.append(self.settler.next_due())
        if self.held:
            times.append(self.held_since + self.cfg.settle)
        due = self.deletes.due()
        if due is not None:
            if self.settler.first_since(self.deletes.first):  # waits for those arrivals (see _tick)
                due = max(due, self.settler.next_due())
            times.append(due)
        elif self.dirty_since is not None and not self.settler and not self.held:
            times.append(max(now, self.last_order + self.cfg.reorder_interval))
        return min(times)

    def _beat_interval(self) -> float:
        busy = self.offline or self.retrain is not None
        return min(self.cfg.heartbeat, 2.0) if busy else self.cfg.heartbeat

    # --- events --------------------------------------------------------------------------------

    def _root_of(self, path: str) -> Path | None:
        best = None
        for r in self.roots:
            if _under(path, r) and (best is None or len(str(r)) > len(str(best))):
                best = r
        return best

    def _wanted(self, path: str) -> bool:
        """An image file under an online root, not in a hidden folder."""
        from imgrank.files import is_image_name

        root = self._root_of(path)
        if root is None or root in self.offline:
            return False
        parts = Path(path).relative_to(root).parts
        return is_image_name(parts[-1]) and not any(p.startswith(".") for p in parts[:-1])

    def _intake(self, event: ev.FileSystemEvent) -> None:
        from imgrank.files import is_image_name

        now = time.monotonic()
        src = os.fsdecode(event.src_path)
        kind = type(event)
        if kind in (ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent):
            if self._wanted(src):
                self.counters["events"] += 1
                self.settler.touch(src, now, closed=kind is ev.FileClosedEvent)
        elif kind is ev.FileMovedEvent:
            self.counters["events"] += 1
            self._moved(src, os.fsdecode(event.dest_path), now)
        elif kind is ev.FileDeletedEvent:
            self.settler.forget(src)
            if self._root_of(src) is not None and is_image_name(os.path.basename(src)):
                self.counters["events"] += 1
                self.deletes.add(src, now)
        elif kind is ev.DirDeletedEvent:
            self.deletes.add(src, now, is_dir=True)
        elif kind is ev.DirMovedEvent:
            dest = os.fsdecode(event.dest_path)
            if not dest or self._root_of(dest) is None:  # moved out of the roots: gone from view
                self.deletes.add(src, now, is_dir=True)
            # within the roots watchdog also reports each file inside as moved
        # Attribute-only changes (imgrank's own mtimes, a touch), opens and reads need no work.

    def _moved(self, src: str, dest: str, now: float) -> None:
        from imgrank import index

        inside = bool(dest) and self._root_of(dest) is not None
        if self.settler.rename(src, dest, now):  # a download finishing under its real name
            if not (inside and self._wanted(dest)):
                self.settler.forget(dest)
            return
        if inside and self._wanted(dest):
            if index.move_path(self.db, src, dest):
                self.counters["moved"] += 1
                self.rescore = True  # under its new name, once the burst of moves is in (see _tick)
            else:
                self.settler.touch(dest, now, closed=True)  # arrived from elsewhere
        elif inside:
            index.mark_missing(self.db, src)  # renamed to a non-photo name: out of view, not judged
        elif self._root_of(src) is not None:
            self.deletes.add(src, now)  # moved out of the roots (e.g. to the trash): a deletion

    # --- work ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        ready = self.settler.ready(now)
        if ready and not self.held:
            self.held_since = now
        self.held += ready
        # In a burst (a camera import) hold what is ready until the rest settles: few, full batches.
        if self.held and (not self.settler or now >= self.held_since + self.cfg.settle):
            held, self.held = sorted(set(self.held)), []
            self._index(held)
        due = self.deletes.due()
        # Wait for files that arrived during the burst: a move across roots is a deletion plus an arrival.
        if due is not None and now >= due:
            waiting = self.held or self.settler.first_since(self.deletes.first)
            if not waiting or now > due + 10 * self.cfg.settle:
                self._deletions()
        if self.rescore:
            self.rescore = False
            self._score()
        self._maybe_retrain()
        if self.dirty_since is not None and not self.settler and not self.held and self.deletes.due() is None:
            if now >= self.last_order + self.cfg.reorder_interval:
                self._reorder()
        if time.monotonic() >= self.last_beat + self._beat_interval():
            self._check_roots()
            self._beat()

    def _own_change(self, paths: list[str]) -> set[str]:
        """Paths whose size and mtime are what the database already has (imgrank's own touch)."""
        from imgrank.index import needs_work

        work = needs_work(self.db, paths)
        return {p for p in paths if p not in work and os.path.exists(p)}

    def _index(self, paths: list[str]) -> None:
        from imgrank import index

        paths = [p for p in paths if p not in self._own_change(paths)]
        for i in range(0, len(paths), CHUNK):
            if self.stopping.is_set():
                raise Stopped
            chunk = paths[i : i + CHUNK]
            try:
                result = index.index_paths(self.db, chunk, self.embedder, jobs=1)
            except Exception:
                log.exception("indexing %d files failed; trying them one by one", len(chunk))
                for path in chunk:
                    self._guard(index.index_paths, self.db, [path], self.embedder, 1)
                result = None
            self.counters["batches"] += 1
            if result is not None:
                self.counters["indexed"] += len(chunk) - result.unchanged
                self.counters["embedded"] += result.embedded
                if result.unreadable:
                    log.warning(
                        "%d unreadable files skipped (see `imgrank status --unreadable`)", result.unreadable
                    )
            self._dirty()  # a new file needs its place, even with content scored before (a copy)
            self._score()

    def _dirty(self) -> None:
        """The order on disk is out of date: reorder once things settle (see _tick)."""
        self.dirty_since = self.dirty_since or time.monotonic()

    def _score(self) -> None:
        """Score what the active head has not scored yet (numpy), if there is a head."""
        from imgrank import runs
        from imgrank.errors import ModelError

        try:
            n = runs.score_unscored(self.db, self.embedder.model_id)
        except ModelError as e:
            self._say_once("head", f"cannot score with the active head: {e}")
            return
        if n:
            self._dirty()
            self.counters["scored"] += n
        elif runs.active_run(self.db) is None:
            self._say_once("head", "no trained head yet: new photos are indexed but not scored")

    def _deletions(self) -> None:
        from imgrank import index, labels

        files, dirs = self.deletes.take()
        self._check_roots()
        judged, folder = [], []
        for path in files:
            if stat_key(path) is not None:  # replaced in place: a change, not a deletion
                self.settler.touch(path, time.monotonic())
                continue
            root = self._root_of(path)
            if root is None or root in self.offline:
                continue
            (folder if any(_under(path, d) for d in dirs) else judged).append(path)
        for d in dirs:
            root = self._root_of(d)
            if root is not None and root not in self.offline:
                folder += [
                    r[0]
                    for r in self.db.execute(
                        "SELECT path FROM files WHERE state != 'missing' AND path LIKE ? ESCAPE '\\'",
                        [_like_prefix(d)],
                    )
                ]
        if folder:
            names = ", ".join(sorted(dirs))
            log.info(
                "a folder was deleted (%s): %d photos marked missing, no labels", names, len(set(folder))
            )
        if len(judged) > self.cfg.max_delete_burst:
            log.warning(
                "%d photos deleted at once (more than --max-delete-burst %d): marked missing, no labels",
                len(judged),
                self.cfg.max_delete_burst,
            )
            folder, judged = folder + judged, []
        with self.db.atomic():
            for path in set(folder):
                if index.mark_missing(self.db, path):
                    self.counters["ignored_deletions"] += 1
            for path in judged:
                sha = index.mark_missing(self.db, path)
                if sha is None:
                    continue
                if self.db.execute("SELECT 1 FROM files WHERE sha256 = ? AND state = 'ok'", [sha]).fetchone():
                    # the content is still here (a move inotify could not pair, or one of two copies)
                    self.db.execute("DELETE FROM files WHERE path = ?", [path])
                    self.counters["moved"] += 1
                    continue
                self.counters["deleted"] += 1
                if self.cfg.learn_from_deletes:
                    labels.set_label(self.db, sha, "delete", "deleted", path)
                    self.counters["labels"] += 1
                    log.info("deleted: %s (labelled delete)", path)

    def _reorder(self) -> None:
        from imgrank.order import order

        self.dirty_since = None
        self.last_order = time.monotonic()
        if self.db.execute("SELECT 1 FROM scores LIMIT 1").fetchone() is None:
            return
        # Photos still in order keep their times, 10 s apart when laid out: a new photo slides in
        # between two others (room for four there) and backups see a few changed files, not all.
        result = order(
            self.db, step=10.0, top=self.cfg.top, oldest_first=self.cfg.oldest_first, keep_places=True
        )
        self.counters["reorders"] += 1
        for path, reason in result.failed:
            log.warning("order: %s: %s", path, reason)
        log.info("ordered %d photos (%d mtimes set)", result.ordered, result.touched)

    # --- retraining ----------------------------------------------------------------------------

    def _label_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM label_history").fetchone()[0]

    def _label_count_at_last_run(self) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM label_history WHERE at <= (SELECT max(started_at) FROM runs)"
        ).fetchone()
        return row[0] or 0

    def _maybe_retrain(self) -> None:
        if self.retrain is not None:
            rc = self.retrain.poll()
            if rc is None:
                return
            self.retrain = None
            if rc == 0:
                self.counters["retrains"] += 1
                log.info("retrained: new head active, photos rescored")
                self._dirty()
            else:
                tail = (config.home_dir() / "train.log").read_text(errors="replace").strip().splitlines()[-1:]
                log.warning("retraining failed (exit %d): %s", rc, tail[0] if tail else "")
        if self.cfg.retrain_after <= 0 or self._label_count() - self.label_mark < self.cfg.retrain_after:
            return
        self.label_mark = self._label_count()
        if importlib.util.find_spec("torch") is None:
            self._say_once(
                "torch",
                "retraining needs the train extra (pip install 'imgrank[train]'); scoring with the last head",
            )
            return
        argv = [sys.executable, "-m", "imgrank", "-q", "train"]
        self.retrain = start_low_priority(argv, config.home_dir() / "train.log")
        log.info(
            "%d new labels: retraining in the background (pid %d)", self.cfg.retrain_after, self.retrain.pid
        )

    # --- observer and roots --------------------------------------------------------------------

    def _catch_up(self, roots: list[Path]) -> None:
        from imgrank import index

        online = [r for r in roots if r.is_dir()]
        if not online:
            return

        def progress(_n: int) -> None:
            if self.stopping.is_set():
                raise Stopped

        result = index.scan(self.db, online, self.embedder, progress=progress)
        for w in result.warnings:
            log.warning(w)
        log.info(
            "catch-up scan: %s",
            ", ".join(f"{k} {v}" for k, v in result.as_dict().items() if v and k != "warnings"),
        )
        for r in online:
            self.devices[r] = r.stat().st_dev
        if result.new or result.changed or result.moved:
            self._dirty()
        self._score()

    def _start_observer(self) -> None:
        self.observer = PollingObserver(timeout=max(1.0, self.cfg.settle)) if self.cfg.polling else Observer()
        try:
            for r in self.roots:
                if r not in self.offline:
                    self._schedule(r)
            self.observer.start()
        except OSError as e:
            if self.cfg.polling or e.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.warning(INOTIFY_HINT)
            self._stop_observer()
            self.cfg.polling = True
            self._start_observer()

    def _schedule(self, root: Path) -> None:
        handler = _Handler(self.queue)
        self.watches[root] = self.observer.schedule(handler, str(root), recursive=True, event_filter=EVENTS)

    def _stop_observer(self) -> None:
        obs, self.observer = self.observer, None
        self.watches.clear()
        if obs is None:
            return
        obs.stop()
        if obs.is_alive():
            obs.join(timeout=3)

    def _go_offline(self, root: Path, why: str) -> None:
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

    def _check_roots(self) -> None:
        from imgrank.index import list_roots

        for r in list_roots(self.db):
            if r not in self.roots:
                self._add_root(r)
        for r in self.roots:
            try:
                dev = r.stat().st_dev if r.is_dir() else None
            except OSError:
                dev = None
            if r not in self.offline:
                if dev is None:
                    self._go_offline(r, "gone")
                elif self.devices.get(r, dev) != dev:
                    self._go_offline(r, "on another device now")
            elif dev is not None and self.devices.get(r, dev) == dev:
                log.info("root %s is back: catching up", r)
                self.offline.discard(r)
                if self.observer is not None:
                    self._schedule(r)
                self._catch_up([r])

    def _add_root(self, root: Path) -> None:
        """A folder registered since the daemon started (`imgrank scan NEWROOT`): watch it too."""
        log.info("new photo folder %s: watching it", root)
        self.roots.append(root)
        if not root.is_dir():
            self._go_offline(root, "not there")
            return
        if not os.access(root, os.W_OK):
            log.warning(
                "%s is read-only here: photos are indexed and scored but not ordered (for the "
                "systemd service, run `imgrank service install` again and restart it)",
                root,
            )
        if self.observer is not None:
            self._schedule(root)
        self._catch_up([root])

    # --- heartbeat and shutdown ----------------------------------------------------------------

    def _beat(self, force: bool = False, stopped: bool = False) -> None:
        self.last_beat = time.monotonic()
        self.counters["torch_loaded"] = "torch" in sys.modules
        self.counters["offline_roots"] = sorted(str(r) for r in self.offline)
        self.counters["polling"] = self.cfg.polling
        counters = dict(self.counters, stopped_at=time.time()) if stopped else self.counters
        self.db.execute(
            """INSERT OR REPLACE INTO daemon (id, pid, started_at, heartbeat_at, counters)
               VALUES (1, ?, ?, ?, ?)""",
            [None if stopped else os.getpid(), self.started_at, time.time(), json.dumps(counters)],
        )

    def _shutdown(self) -> None:
        self._stop_observer()
        if self.retrain is not None and self.retrain.poll() is None:
            self.retrain.terminate()
            try:
                self.retrain.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.retrain.kill()
                self.retrain.wait()
        self._guard(self._beat, True, True)
        self.db.conn.commit()

    def _say_once(self, key: str, message: str) -> None:
        if key not in self.said:
            self.said.add(key)
            log.warning(message)


def _like_prefix(folder: str) -> str:
    prefix = folder.rstrip(os.sep) + os.sep
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def start_low_priority(argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start a child at the lowest CPU and IO priority, its output to `log_path`."""
    prefix = []
    if shutil.which("ionice"):
        prefix = ["ionice", "-c", "3"]
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            prefix + argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_lower_priority,  # before exec: the child never runs at normal priority
        )


def _lower_priority() -> None:
    try:
        os.nice(10)
    except OSError:
        pass


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_status(db) -> dict:
    """Whether the daemon runs (fresh heartbeat and live pid), since when, and its counters."""
    row = db.execute("SELECT pid, started_at, heartbeat_at, counters FROM daemon WHERE id = 1").fetchone()
    if row is None:
        return {"running": False, "pid": None, "started_at": None, "heartbeat_at": None, "counters": {}}
    pid, started, beat, counters = row
    counters = json.loads(counters or "{}")
    fresh = beat is not None and time.time() - beat < STALE_AFTER * max(WatchConfig.heartbeat, 10.0)
    return {
        "running": bool(fresh and _pid_alive(pid)),
        "pid": pid,
        "started_at": started,
        "heartbeat_at": beat,
        "counters": counters,
    }


def format_daemon_status(info: dict) -> str:
    """One line for `imgrank status`."""
    import datetime

    def when(t):
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"

    c = info["counters"]
    done = ", ".join(
        f"{k} {c.get(k, 0)}" for k in ("indexed", "moved", "deleted", "labels", "reorders", "retrains")
    )
    if info["running"]:
        return f"daemon: running (pid {info['pid']}) since {when(info['started_at'])}; {done}"
    if info["started_at"] is None:
        return "daemon: not running (start it with `imgrank watch` or `imgrank service install --enable`)"
    return f"daemon: not running (last seen {when(info['heartbeat_at'])}); {done}"


def _refuse_second_daemon(db) -> None:
    info = daemon_status(db)
    if info["running"] and info["pid"] != os.getpid():
        raise ImgrankError(f"imgrank watch is already running (pid {info['pid']})")


def run_watch(roots: list[Path | str], cfg: WatchConfig | None = None) -> dict:
    """The `imgrank watch` entry point: register roots, then run until SIGTERM or SIGINT. Returns counters."""
    from imgrank import index
    from imgrank.db import open_db

    db = open_db()
    index.add_roots(db, roots)
    all_roots = index.list_roots(db)
    db.close()
    if not all_roots:
        raise ImgrankError("no photo folders yet: give one, e.g. `imgrank watch ~/Pictures`")
    watcher = Watcher(all_roots, cfg)

    def on_signal(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        # queue.put takes a lock the interrupted code may hold: hand it to another thread
        threading.Thread(target=watcher.stop, daemon=True).start()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info("watching %s", ", ".join(map(str, all_roots)))
        return watcher.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
