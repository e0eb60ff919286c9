"""`imgrank watch`: register the roots, run the daemon's loop, stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from imgrank import index
from imgrank.daemon.loop import WatchConfig, Watcher
from imgrank.errors import ImgrankError
from imgrank.store.db import open_db

log = logging.getLogger("imgrank.daemon")


def run_watch(roots: list[Path | str], cfg: WatchConfig | None = None) -> dict:
    """The `imgrank watch` entry point: register roots, then run until SIGTERM or SIGINT. Returns counters."""

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
