"""Retraining in a separate, low-priority process (`imgrank -q train`), so the daemon never imports
torch. The supervisor only starts, polls and stops the child and reports how it ended; it never
calls back into the loop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from imgrank.private import open_private_log
from imgrank.store import labels


@dataclass
class Finished:
    """How a retraining child ended: `ok` means a new head is active and photos were rescored."""

    ok: bool
    returncode: int
    last_line: str = ""


def torch_available() -> bool:
    """Whether the `train` extra is installed (found without importing torch)."""
    return importlib.util.find_spec("torch") is not None


class Retrainer:
    """At most one `imgrank train` child at a time, its output in `log_path`."""

    def __init__(self, log_path: Path, after: int):
        self.log_path = log_path
        self.after = after  # label changes that call for a retraining (0: never)
        self.mark = 0  # label changes counted when training last started
        self.child: subprocess.Popen | None = None

    def count_labels_since_last_run(self, db) -> None:
        """Start counting new labels from the latest training run (the daemon's start)."""
        from imgrank.store.scores import last_started  # lazy: sqlite_utils

        started = last_started(db)
        self.mark = 0 if started is None else labels.changes_count(db, until=started)

    def new_labels(self, db) -> int:
        """How many label changes call for a retraining now (counted as taken); 0 while one runs,
        when retraining is off, or when fewer than `after` changes came since the last."""

        if self.child is not None or self.after <= 0:
            return 0
        count = labels.changes_count(db)
        new = count - self.mark
        if new < self.after:
            return 0
        self.mark = count
        return new

    @property
    def running(self) -> bool:
        return self.child is not None

    def start(self) -> int:
        """Start retraining; returns the child's pid."""
        self.child = start_low_priority([sys.executable, "-m", "imgrank", "-q", "train"], self.log_path)
        return self.child.pid

    def poll(self) -> Finished | None:
        """How the child ended, once, when it has; None while it runs or when none was started."""
        if self.child is None or (rc := self.child.poll()) is None:
            return None
        self.child = None
        if rc == 0:
            return Finished(True, 0)
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return Finished(False, rc, lines[-1] if lines else "")

    def stop(self, timeout: float = 2.0) -> None:
        """Terminate a running child (kill it if it does not stop within `timeout`) and reap it."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def start_low_priority(argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start a child at the lowest CPU and IO priority, its output to `log_path`."""
    prefix = ["ionice", "-c", "3"] if shutil.which("ionice") else []
    with open(open_private_log(log_path), "wb") as out:
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
