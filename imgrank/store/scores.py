"""The run registry's tables: `runs` (each trained or imported head), `scores` (P(delete) per content
hash, from the active head or the cold-start prior) and `oof` (each run's held-out predictions).

Owns these three tables; nothing else runs SQL on them. SQL only: which head to activate, how to
score and how to rank the suspects is `imgrank.runs`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import numpy as np

from imgrank.store.db import IN_JSON

RUN_COLUMNS = (
    "id",
    "started_at",
    "finished_at",
    "config",
    "counts",
    "metrics",
    "head_path",
    "embed_model",
    "active",
)

# --- runs ---


def _run(row) -> dict:
    return dict(zip(RUN_COLUMNS, row, strict=True))


def active_run(db) -> dict | None:
    """The active run's row, or None when no head is active."""
    row = db.execute(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE active = 1 ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return _run(row) if row else None


def all_runs(db) -> list[dict]:
    """Every run's row (RUN_COLUMNS; config, counts and metrics as stored JSON text), newest first."""
    return [_run(r) for r in db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY id DESC")]


def last_started(db) -> float | None:
    """When the latest run (trained or imported) started."""
    return db.execute("SELECT max(started_at) FROM runs").fetchone()[0]


def run_with_digest(db, digest: str) -> int | None:
    """The first run whose config records this head digest."""
    row = db.execute(
        "SELECT id FROM runs WHERE json_extract(config, '$.head_digest') = ? ORDER BY id LIMIT 1", [digest]
    ).fetchone()
    return row[0] if row else None


def add_run(
    db, started_at: float, finished_at: float, run_config: dict, counts: dict, metrics: dict, embed_model: str
) -> int:
    """Insert an inactive run without a head yet; returns its id."""
    cur = db.execute(
        "INSERT INTO runs (started_at, finished_at, config, counts, metrics, embed_model, active) "
        "VALUES (?, ?, ?, ?, ?, ?, 0)",
        [
            started_at,
            finished_at,
            json.dumps(run_config),
            json.dumps(counts),
            json.dumps(metrics),
            embed_model,
        ],
    )
    return cur.lastrowid


def set_head_path(db, run_id: int, path: str) -> None:
    db.execute("UPDATE runs SET head_path = ? WHERE id = ?", [path, run_id])


def head_path(db, run_id: int) -> str | None:
    """A run's head file; None when there is no such run or it has no head."""
    row = db.execute("SELECT head_path FROM runs WHERE id = ?", [run_id]).fetchone()
    return row[0] if row else None


def activate(db, run_id: int) -> None:
    """Make this run the only active one."""
    with db.atomic():
        db.execute("UPDATE runs SET active = 0 WHERE active = 1")
        db.execute("UPDATE runs SET active = 1 WHERE id = ?", [run_id])


# --- scores ---


def write_scores(db, shas: list[str], values: np.ndarray, run_id: int | None, replace: bool = False) -> int:
    """Store P(delete) per content hash; run_id None marks the cold-start prior's (replace: drop every
    other score first). Returns the count."""
    now = time.time()
    with db.atomic():
        if replace:
            db.execute("DELETE FROM scores")
        db.conn.executemany(
            "INSERT OR REPLACE INTO scores (sha256, run_id, score, at) VALUES (?, ?, ?, ?)",
            [(s, run_id, float(v), now) for s, v in zip(shas, values, strict=True)],
        )
    return len(shas)


def forget_scores(db, shas: Iterable[str]) -> None:
    """Drop the scores of these contents (their file name, a feature, changed)."""
    db.execute(f"DELETE FROM scores WHERE sha256 IN {IN_JSON}", [json.dumps(list(shas))])


def all_scores(db) -> dict[str, float]:
    """Every stored score by content hash."""
    return dict(db.execute("SELECT sha256, score FROM scores").fetchall())


def has_scores(db) -> bool:
    return db.execute("SELECT 1 FROM scores LIMIT 1").fetchone() is not None


def scored_by(db, run_id: int | None) -> set[str]:
    """The content hashes scored by this run (None: by the prior)."""
    return {r[0] for r in db.execute("SELECT sha256 FROM scores WHERE run_id IS ?", [run_id])}


def score_source(db) -> str | None:
    """Where the stored scores come from: "head", "prior" (no head yet), or None when nothing is scored."""
    row = db.execute("SELECT run_id IS NULL FROM scores ORDER BY run_id IS NULL LIMIT 1").fetchone()
    return None if row is None else ("prior" if row[0] else "head")


# --- out-of-fold predictions ---


def write_oof(db, run_id: int, shas: list[str], p_delete: np.ndarray) -> None:
    """Held-out P(delete) per labelled photo (rows never held out, NaN, are left out)."""
    db.conn.executemany(
        "INSERT INTO oof (run_id, sha256, p_delete) VALUES (?, ?, ?)",
        [(run_id, s, float(p)) for s, p in zip(shas, p_delete, strict=True) if np.isfinite(p)],
    )


def oof_of_latest_run(db) -> list[tuple[str, float]] | None:
    """(sha256, held-out P(delete)) of the latest run that stored any; None when none has."""
    row = db.execute("SELECT max(run_id) FROM oof").fetchone()
    if row is None or row[0] is None:
        return None
    return [(sha, p) for sha, p in db.execute("SELECT sha256, p_delete FROM oof WHERE run_id = ?", [row[0]])]
