"""The ranking: present, scored photos under the roots, least-wanted first.

No SQL here: it joins in Python what the tables' owners return (index: present files under the
roots; model: scores; labels: current labels). `order`, `top` and the daemon use it.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlite_utils

from imgrank import index, labels, runs


class Ranked(NamedTuple):
    path: str
    score: float
    label: str | None
    sha256: str


def ranked(db: sqlite_utils.Database, limit: int | None = None) -> list[Ranked]:
    """The deletion order: present, scored images under the roots, highest deletion score first, then
    by path; in each group of near-duplicates or exact copies, the keeper (learned from the owner's
    choices, else the lowest score) keeps its score and the others move up after it (dupes.adjust)."""
    from imgrank import dupes

    near = dupes.load_groups(db)
    rows = dupes.adjust(scored_photos(db), near, dupes.keeper_utility(db, near))
    return rows if limit is None else rows[: max(limit, 0)]


def scored_photos(db: sqlite_utils.Database, limit: int | None = None) -> list[Ranked]:
    """Present, scored images under the roots by their own scores: highest first, then by path."""
    scores = runs.scores(db)
    current = labels.current_labels(db)
    rows = [
        Ranked(path, score, current.get(sha), sha)
        for path, sha in index.present_files(db)
        if (score := scores.get(sha)) is not None
    ]
    rows.sort(key=lambda r: (-r.score, r.path))
    return rows if limit is None else rows[: max(limit, 0)]
