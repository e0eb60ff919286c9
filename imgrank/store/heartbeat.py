"""The `daemon` table: one row, the daemon's pid, start, last heartbeat and counters.

imgrank/daemon/heartbeat.py decides what a beat says and whether the daemon is alive; this runs its
SQL. Light on purpose: `imgrank status` reads it without watchdog, torch or sqlite-utils' import."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Beat:
    pid: int | None  # None once the daemon has stopped
    started_at: float | None
    heartbeat_at: float | None
    counters: dict = field(default_factory=dict)


def write(db, beat: Beat) -> None:
    """Store the daemon's row (replacing the one there)."""
    db.execute(
        """INSERT OR REPLACE INTO daemon (id, pid, started_at, heartbeat_at, counters)
           VALUES (1, ?, ?, ?, ?)""",
        [beat.pid, beat.started_at, beat.heartbeat_at, json.dumps(beat.counters)],
    )


def last(db) -> Beat | None:
    """The daemon's row, None if no daemon ever ran with this database."""
    row = db.execute("SELECT pid, started_at, heartbeat_at, counters FROM daemon WHERE id = 1").fetchone()
    if row is None:
        return None
    pid, started, beat_at, counters = row
    return Beat(pid, started, beat_at, json.loads(counters or "{}"))
