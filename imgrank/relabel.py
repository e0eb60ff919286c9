"""`relabel`: label named files (and the images under named folders), indexing what is not indexed
yet; the labels themselves go through `labels.set_label` (labels.py owns the tables)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imgrank import index, pairs
from imgrank.embed import load_embedder
from imgrank.files import is_image_name, walk
from imgrank.store.db import model_name
from imgrank.store.labels import set_label


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
    # A label goes to the content as read: the hash of the row a read just wrote, or of a row
    # that needed no read. An order or restore in another process may move a photo's mtime just
    # after it was read; the row may then look out of date to the next scan, but the hash is the
    # content's all the same (asking for a row that looks current failed such photos when orders
    # and restores ran back to back, as in tests/test_concurrency.py).
    todo = index.needs_work(db, map(str, files))
    if todo:
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
