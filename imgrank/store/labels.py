"""Labels: the owner's keep/delete decisions, keyed by content, with an append-only history.

Owns the tables `labels` and `label_history`; nothing else runs SQL on them.
"""

from __future__ import annotations

import time

from imgrank.errors import ImgrankError
from imgrank.files import db_path, fs_path

LABELS = ("keep", "delete")
SOURCES = ("user", "import", "deleted", "reviewed")


def set_label(db, sha256: str, label: str | None, source: str, path: str | None = None) -> bool:
    """Set (or with label None, clear) the label of a content hash; appends to the history.

    Returns True when the label changed. A label set again to what it is (by the same source)
    changes nothing and appends no history.
    """
    if label is not None and label not in LABELS:
        raise ImgrankError(f"unknown label {label!r}: use one of {', '.join(LABELS)}")
    if source not in SOURCES:
        raise ImgrankError(f"unknown label source {source!r}")
    now = time.time()
    with db.atomic():
        row = db.execute("SELECT label, source FROM labels WHERE sha256 = ?", [sha256]).fetchone()
        old = row[0] if row else None
        if old == label and (label is None or row[1] == source):
            return False
        if label is None:
            db.execute("DELETE FROM labels WHERE sha256 = ?", [sha256])
        else:
            db.execute(
                "INSERT OR REPLACE INTO labels (sha256, label, source, updated_at) VALUES (?, ?, ?, ?)",
                [sha256, label, source, now],
            )
        db.execute(
            "INSERT INTO label_history (sha256, label, source, path, at) VALUES (?, ?, ?, ?, ?)",
            [sha256, label, source, None if path is None else db_path(path), now],
        )
    return old != label


def current_label(db, sha256: str) -> str | None:
    """The label a content hash has now, if any."""
    row = db.execute("SELECT label FROM labels WHERE sha256 = ?", [sha256]).fetchone()
    return row[0] if row else None


def current_labels(db) -> dict[str, str]:
    """The current label of each labelled content hash."""
    return dict(db.execute("SELECT sha256, label FROM labels").fetchall())


def current_sources(db) -> dict[str, tuple[str, str]]:
    """The current (label, source) of each labelled content hash."""
    return {
        sha: (label, source) for sha, label, source in db.execute("SELECT sha256, label, source FROM labels")
    }


def label_counts(db) -> dict:
    """Counts by label and by (label, source)."""
    by_label = {label: 0 for label in LABELS}
    by_source: dict[str, dict[str, int]] = {}
    for label, source, n in db.execute("SELECT label, source, count(*) FROM labels GROUP BY label, source"):
        by_label[label] = by_label.get(label, 0) + n
        by_source.setdefault(source, {})[label] = n
    return {"total": sum(by_label.values()), "by_label": by_label, "by_source": by_source}


def changes_count(db, until: float | None = None) -> int:
    """How many label changes were ever made (up to the time `until`, if given)."""
    if until is None:
        return db.execute("SELECT count(*) FROM label_history").fetchone()[0]
    return db.execute("SELECT count(*) FROM label_history WHERE at <= ?", [until]).fetchone()[0]


def history(db, n: int = 20) -> list[dict]:
    """The most recent label changes, newest first."""
    rows = db.execute(
        "SELECT at, label, source, path, sha256 FROM label_history ORDER BY id DESC LIMIT ?", [n]
    ).fetchall()
    return [
        {"at": at, "label": label, "source": source, "path": fs_path(p) if p else None, "sha256": sha}
        for at, label, source, p, sha in rows
    ]
