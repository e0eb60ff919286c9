"""Indexing: the `files` and `roots` tables (rows.py, their owner) and the scan that fills them
(pipeline.py: walk, read in bounded memory, embed, commit in batches).

Callers use `imgrank.index` alone; what they need is here.
"""

from imgrank.index.pipeline import BATCH, ScanResult, embed_names, index_paths, scan, scan_lock
from imgrank.index.rows import (
    ContentFacts,
    FileRow,
    add_roots,
    content_facts,
    count_with_reason,
    drop_if_moved,
    follow_moved,
    list_roots,
    mark_missing,
    move_path,
    needs_work,
    paths_of_contents,
    present_contents,
    present_files,
    present_under,
    remove_root,
    rows,
    status,
    unchanged,
    unreadable,
)

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
