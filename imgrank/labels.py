"""Labels: the owner's keep/delete decisions, keyed by content, with an append-only history.

Owns the tables `labels` and `label_history`; nothing else runs SQL on them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imgrank import pairs
from imgrank.errors import ImgrankError
from imgrank.files import db_path, fs_path, is_image_name, walk

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


@dataclass
class RelabelResult:
    applied: list[str] = field(default_factory=list)  # paths labelled
    changed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    indexed: int = 0

    def as_dict(self) -> dict:
        return {
            "applied": len(self.applied),
            "changed": self.changed,
            "indexed": self.indexed,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
        }


def _expand(paths: Iterable[str | Path], failed: list, partners: set[Path] | None = None) -> list[Path]:
    """Files named, and the images under folders named; missing paths go to `failed`. The other files
    of a named file's RAW+JPEG pair are added too, and into `partners`."""
    out: list[Path] = []
    for p in paths:
        path = Path(os.path.abspath(os.path.expanduser(str(p))))
        if path.is_dir():
            out.extend(Path(f) for f in walk(path))
        elif path.is_file():
            if not is_image_name(path.name):
                failed.append((str(path), "not an image file"))
            else:  # with the other files of its photo (a RAW+JPEG pair is labelled as one)
                out.append(path)
                others = [Path(p) for p in pairs.members(str(path))[1:]]
                out.extend(others)
                if partners is not None:
                    partners.update(others)
        elif path.exists():
            failed.append((str(path), "not a regular file"))
        else:
            failed.append((str(path), "no such file or folder"))
    return list(dict.fromkeys(out))


def _why_not(path: Path, row) -> str | None:
    """Why a photo named to relabel has no content to label (None: it has)."""
    try:
        path.stat()
    except OSError as e:
        return e.strerror or str(e)
    if row is None or row.state != "ok" or not row.sha256:
        return (row and row.reason) or "could not be indexed"
    return None


def relabel(
    db,
    label: str | None,
    paths: Iterable[str | Path],
    get_embedder: Callable | None = None,
    source: str = "user",
    on_wait: Callable[[], None] | None = None,
) -> RelabelResult:
    """Label files (and every image under folders). Paths not indexed yet are indexed and embedded first.

    A path that is missing or unreadable is reported in `failed`; the others are still applied.
    Indexing waits for a scan running in another process (`on_wait` is told).
    """
    result = RelabelResult()
    partners: set[Path] = set()
    files = _expand(paths, result.failed, partners)
    partners -= {Path(os.path.abspath(os.path.expanduser(str(p)))) for p in paths}  # named ones count
    from imgrank import index

    # A label goes to the content as read: the hash of the row a read just wrote, or of a row
    # that needed no read. An order or restore in another process may move a photo's mtime just
    # after it was read; the row may then look out of date to the next scan, but the hash is the
    # content's all the same (asking for a row that looks current failed such photos when orders
    # and restores ran back to back, as in tests/test_concurrency.py).
    todo = index.needs_work(db, map(str, files))
    if todo:
        from imgrank.db import model_name
        from imgrank.embed import load_embedder

        embedder = get_embedder() if get_embedder else load_embedder(model_name(db))
        scan = index.index_paths(db, sorted(todo), embedder, on_wait=on_wait)
        result.indexed += scan.new + scan.changed + scan.moved
    found = index.rows(db, map(str, files))
    for path in files:
        row = found.get(str(path))
        reason = _why_not(path, row)
        if reason:
            if path not in partners:  # a pair's RAW that cannot be read: its JPEG carries the label
                result.failed.append((str(path), reason))
            continue
        result.changed += set_label(db, row.sha256, label, source, str(path))
        if path not in partners:  # a pair is one photo applied
            result.applied.append(str(path))
    return result
