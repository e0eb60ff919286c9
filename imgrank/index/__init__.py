"""Indexing: the `files` and `roots` tables (rows.py, their owner) and the scan that fills them
(pipeline.py: walk, read in bounded memory, embed, commit in batches).

Callers use `imgrank.index` alone; what they need is here.
"""

from functools import partial

from imgrank.index.needs import needs_work, unchanged
from imgrank.index.pipeline import BATCH, ScanResult, embed_names, index_paths, scan, scan_lock
from imgrank.store.rows import (
    ContentFacts,
    FileRow,
    add_roots,
    content_facts,
    count_with_reason,
    drop_if_moved,
    follow_moved,
    list_roots,
    mark_missing,
    paths_of_contents,
    present_contents,
    present_files,
    present_under,
    remove_root,
    rows,
    status,
    unreadable,
)
from imgrank.store.rows import (
    move_path as _move_path,
)
from imgrank.store.scores import forget_scores

__all__ = [
    "BATCH",
    "ContentFacts",
    "FileRow",
    "ScanResult",
    "add_roots",
    "content_facts",
    "count_with_reason",
    "drop_if_moved",
    "follow_moved",
    "embed_names",
    "index_paths",
    "list_roots",
    "mark_missing",
    "move_path",
    "needs_work",
    "paths_of_contents",
    "present_contents",
    "present_files",
    "present_under",
    "remove_root",
    "rows",
    "scan",
    "scan_lock",
    "status",
    "unchanged",
    "unreadable",
]


def move_path(db, src, dst) -> bool:
    """A rename seen as it happened (rows.move_path): the row follows the file, and the photo's score
    is forgotten in the same transaction (the file name is one of a head's features)."""
    return _move_path(db, src, dst, partial(forget_scores, db))
