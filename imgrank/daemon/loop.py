"""The daemon's loop: catch up, then watch the roots; index what settles, learn from deletions, keep
the order fresh.

One thread (the caller's) owns the database and does all the work; the observer's threads only
put events on a queue, and the loop blocks on that queue until the next deadline, so an idle
daemon costs nothing beyond the observer. torch is never imported here: scoring is numpy
(imgrank.model) and retraining runs as a separate, low-priority process (retrain.py).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from imgrank import config, index, runs
from imgrank.daemon import deletions, heartbeat, work
from imgrank.daemon.debounce import DeleteBurst, Settler
from imgrank.daemon.heartbeat import StoreGone
from imgrank.daemon.retrain import Retrainer, torch_available
from imgrank.daemon.roots import Left, Renamed, Roots, Written
from imgrank.daemon.work import Stopped
from imgrank.embed import load_embedder
from imgrank.errors import ModelError
from imgrank.first_order import FirstOrder
from imgrank.index import list_roots
from imgrank.store.db import model_name, open_db
from imgrank.store.scores import active_run
from imgrank.words import plural

log = logging.getLogger("imgrank.daemon")
NO_TORCH = "retraining needs the train extra (pip install 'imgrank[train]'); scoring with the last head"


@dataclass
class WatchConfig:
    settle: float = 2.0  # seconds a file's size and mtime must hold still (without a close event)
    reorder_interval: float = 30.0  # at most one reorder per this many seconds
    top: int | None = None  # order only the N least-wanted (as `imgrank order --top N`)
    oldest_first: bool = False  # as `imgrank order --oldest-first`
    xmp: bool = False  # also write XMP ratings in sidecars (as `imgrank order --xmp`)
    xmp_style: str = "darktable"
    retrain_after: int = 20  # new labels before retraining in the background
    learn_from_deletes: bool = True
    max_delete_burst: int = 20  # more deletions than this in one burst: a folder wipe, no labels
    polling: bool = False
    heartbeat: float = heartbeat.INTERVAL
    model: str | None = None


class Watcher:
    """`run()` until `stop()`; usable in a thread (tests) or the main thread (the CLI)."""

    def __init__(self, roots: list[Path], cfg: WatchConfig | None = None):
        self.cfg = cfg or WatchConfig()
        self.queue: queue.Queue = queue.Queue()
        self.roots = Roots(roots, self.queue, self.cfg.polling, self.cfg.settle)
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
        self.dirty_since: float | None = None
        self.why: list[str] = []  # what changed since the last order, by name ("a.jpg arrived")
        self.renamed: list[str] = []  # new names to embed and score, once the burst of moves is in
        self.last_order = float("-inf")  # the first change is ordered at once
        self.last_beat = 0.0
        self.retrainer = Retrainer(config.home_dir() / "train.log", self.cfg.retrain_after)
        self.said: set[str] = set()
        self.retry: set[str] = set()  # files whose indexing failed (a full disk): tried again later

    # --- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: safe from any thread (not from a signal handler: see run_watch)."""
        self.stopping.set()
        self.queue.put(None)

    def run(self) -> dict:

        self.db_path = config.db_path()
        self.db = db = open_db(self.db_path)
        self.lock_fd = heartbeat.hold_daemon_lock()  # one daemon per home, for its whole life
        self.db_file = heartbeat.file_identity(self.db_path)  # the file it must stay (_reorder)
        try:  # from here on the lock is let go however run() ends (_shutdown)
            index.add_roots(db, [r for r in self.roots.roots if r.is_dir()])  # what it indexes: under a root
            self.embedder = load_embedder(model_name(db, self.cfg.model))
            self._beat()
            for r in [r for r in self.roots.roots if not r.is_dir()]:
                self.roots.go_offline(r, "not there")
            # Watch first, then catch up: nothing that happens in between is missed.
            self.roots.start_observer()
            self._catch_up([r for r in self.roots.roots if r not in self.roots.offline])
            self.why = []  # logged as the order at start
            self._dirty()  # order at start: whatever changed while nobody watched gets its place
            self.ready.set()
            self.retrainer.count_labels_since_last_run(db)
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
            for item in batch:
                if item is not None:
                    self._guard(self._intake, *item)
            if not self.stopping.is_set():
                self._guard(self._tick)

    def _guard(self, fn, *args) -> None:
        """A failure (one bad file, a locked database) is logged and counted; the daemon goes on."""
        try:
            fn(*args)
        except (Stopped, StoreGone):
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
            if self.settler:  # waits for the arrivals pending (see _tick)
                due = max(due, self.settler.next_due())
            times.append(due)
        elif self.dirty_since is not None and not self.settler and not self.held:
            times.append(max(now, self.last_order + self.cfg.reorder_interval))
        return min(times)

    def _beat_interval(self) -> float:
        busy = self.roots.offline or self.retrainer.running
        return min(self.cfg.heartbeat, 2.0) if busy else self.cfg.heartbeat

    # --- events --------------------------------------------------------------------------------

    def _intake(self, reported_at: float, event) -> None:
        change = self.roots.classify(event)
        now = time.monotonic()
        if isinstance(change, Written):
            self.counters["events"] += 1
            self.settler.touch(change.path, now, closed=change.closed)
        elif isinstance(change, Renamed):
            self.counters["events"] += 1
            self._renamed(change, now)
        elif isinstance(change, Left):
            self.settler.forget(change.path)
            if change.judged:
                self.counters["events"] += not change.is_dir
                self.deletes.add(change.path, now, is_dir=change.is_dir, went_at=reported_at)

    def _renamed(self, change: Renamed, now: float) -> None:

        src, dest = change.src, change.dest
        if self.settler.rename(src, dest, now):  # a download finishing under its real name
            if not change.wanted:
                self.settler.forget(dest)
            return
        if not change.wanted:
            index.mark_missing(self.db, src)  # renamed to a non-photo name: out of view, not judged
        elif index.move_path(self.db, src, dest):
            log.info("moved: %s -> %s", src, dest)
            self.counters["moved"] += 1  # after the line: whoever waits on the counter finds it
            self.renamed.append(dest)  # scored again under its new name (see _tick)
            self.why.append(f"{Path(dest).name} moved")
        else:
            self.settler.touch(dest, now, closed=True)  # arrived from elsewhere

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
        # Wait for every file still arriving: a move across disks is a copy, seen first and maybe still
        # settling (its times are set after it is closed), then a deletion. Judged first, it is a delete.
        if due is not None and now >= due:
            waiting = self.held or bool(self.settler)
            if not waiting or now > due + 10 * self.cfg.settle:
                self._deletions()
        if self.renamed:
            renamed, self.renamed = self.renamed, []
            work.embed_names(self.db, self.embedder, renamed)
            self._score()
        self._maybe_retrain()
        if self.dirty_since is not None and not self.settler and not self.held and self.deletes.due() is None:
            if now >= self.last_order + self.cfg.reorder_interval:
                self._reorder()
        if time.monotonic() >= self.last_beat + self._beat_interval():
            for path in self.retry:
                self.settler.touch(path, time.monotonic())
            self.retry = set()
            self._check_roots()
            self._beat()

    def _index(self, paths: list[str]) -> None:
        done = work.index_settled(self.db, self.embedder, paths, self.stopping.is_set, self._indexed)
        self.counters["batches"] += done.batches
        self.counters["indexed"] += done.indexed
        self.counters["embedded"] += done.embedded
        self.counters["errors"] += done.failed
        self.retry.update(done.not_indexed)  # not counted; tried again at the next heartbeat
        self.why += [f"{Path(p).name} arrived" for p in done.arrived]
        self.why += [f"{Path(p).name} changed" for p in done.changed]

    def _indexed(self) -> None:
        self._dirty()  # a new file needs its place, even with content scored before (a copy)
        self._score()

    def _dirty(self) -> None:
        """The order on disk is out of date: reorder once things settle (see _tick)."""
        self.dirty_since = self.dirty_since or time.monotonic()

    def _score(self) -> None:
        """Score what the active head has not scored yet (numpy), if there is a head."""

        try:
            n = runs.score_unscored(self.db, self.embedder.model_id)
        except ModelError as e:
            self._say_once("head", f"cannot score with the active head: {e}")
            return
        if n:
            self._dirty()
            self.counters["scored"] += n
        if active_run(self.db) is None:
            self._say_once("head", "no trained head yet: photos are scored by the zero-shot prior")

    def _deletions(self) -> None:
        files, dirs = self.deletes.take()
        self._check_roots()
        judgement = deletions.judge(self.db, files, dirs, self.roots.online, self.cfg.max_delete_burst)
        for path in judgement.replaced:
            self.settler.touch(path, time.monotonic())
        outcome = deletions.apply(self.db, judgement, self.cfg.learn_from_deletes)
        outcome.report(self.counters)
        self.why += [f"{Path(p).name} deleted" for p in outcome.deleted]
        if outcome.deleted:
            self._dirty()  # a group that lost its keeper has a new one (see work.regroup)

    def _reorder(self) -> None:
        heartbeat.check_store(self.db_path, self.db_file)  # raises StoreGone: no touching
        why, self.why = self.why, []
        self.dirty_since = None
        self.last_order = time.monotonic()
        xmp_style = self.cfg.xmp_style if self.cfg.xmp else None
        if work.reorder(self.db, self.cfg.top, self.cfg.oldest_first, why, xmp_style) is not None:
            self.counters["reorders"] += 1

    # --- retraining ----------------------------------------------------------------------------

    def _maybe_retrain(self) -> None:
        finished = self.retrainer.poll()
        if finished is not None and finished.ok:
            self.counters["retrains"] += 1
            log.info("retrained: new head active, photos rescored")
            self._dirty()
        elif finished is not None:
            log.warning("retraining failed (exit %d): %s", finished.returncode, finished.last_line)
        new = self.retrainer.new_labels(self.db)
        if not new:
            return
        if not torch_available():
            return self._say_once("torch", NO_TORCH)
        pid = self.retrainer.start()
        log.info("%s: retraining in the background (pid %d)", plural(new, "new label"), pid)

    # --- roots ---------------------------------------------------------------------------------

    def _catch_up(self, roots: list[Path]) -> None:
        online = [r for r in roots if r.is_dir()]
        if not online:
            return

        def early(db):  # a first scan of a big folder: the first photos ordered while the rest go on
            return work.reorder(db, self.cfg.top, self.cfg.oldest_first, ["the first photos of a catch-up"])

        first = FirstOrder(self.db, self.embedder.model_id, early)
        result = work.catch_up(self.db, self.embedder, online, self.stopping.is_set, first)
        self.roots.caught_up(online)
        if result.new or result.changed or result.moved:
            self.why.append(f"a catch-up with {', '.join(map(str, online))}")
            self._dirty()
        self._score()

    def _check_roots(self) -> None:

        todo = self.roots.check(list_roots(self.db))
        if todo:
            self._catch_up(todo)

    # --- heartbeat and shutdown ----------------------------------------------------------------

    def _beat(self, stopped: bool = False) -> None:
        self.last_beat = time.monotonic()
        self.counters["torch_loaded"] = "torch" in sys.modules
        self.counters["offline_roots"] = sorted(str(r) for r in self.roots.offline)
        self.counters["polling"] = self.roots.polling
        heartbeat.beat(self.db, self.started_at, self.counters, stopped=stopped)

    def _shutdown(self) -> None:
        self.roots.stop_observer()
        self.retrainer.stop()
        self._guard(self._beat, True)
        self.db.conn.commit()
        os.close(self.lock_fd)

    def _say_once(self, key: str, message: str) -> None:
        if key not in self.said:
            self.said.add(key)
            log.warning(message)
