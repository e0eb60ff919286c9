"""The ranking: present, scored photos under the roots, least-wanted first.

No SQL here: it joins in Python what the tables' owners return (index: present files under the
roots; model: scores; labels: current labels). `order`, `top` and the daemon use it.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlite_utils

from imgrank import dupes, index, pairs
from imgrank.store import dupes as dupe_groups
from imgrank.store import labels
from imgrank.store.scores import all_scores


class Ranked(NamedTuple):
    path: str
    score: float
    label: str | None
    sha256: str


def ranked(db: sqlite_utils.Database, limit: int | None = None) -> list[Ranked]:
    """The deletion order: present, scored images under the roots, highest deletion score first, then
    by path; in each group of near-duplicates or exact copies, the keeper (learned from the owner's
    choices, else the lowest score) keeps its score and the others move up after it (dupes.adjust).
    A RAW+JPEG pair is one row (see scored_photos)."""
    rows = ranked_with_partners(db)[0]
    return rows if limit is None else rows[: max(limit, 0)]


def ranked_with_partners(db: sqlite_utils.Database) -> tuple[list[Ranked], dict[str, list[tuple[str, str]]]]:
    """The deletion order (ranked), and {lead path: [(path, sha256) of the other files of its photo]}
    for every RAW+JPEG pair in it: `order` gives them their photo's time."""

    rows, partners = _scored(db)
    near = dupe_groups.groups(db)
    return dupes.adjust(rows, near, dupes.keeper_utility(db, near)), partners


def scored_photos(db: sqlite_utils.Database, limit: int | None = None) -> list[Ranked]:
    """Present, scored images under the roots by their own scores: highest first, then by path. A
    RAW+JPEG pair (imgrank.pairs) is one row: its lead's path and score, the label either has."""
    rows = _scored(db)[0]
    return rows if limit is None else rows[: max(limit, 0)]


def photo_files(db: sqlite_utils.Database) -> list[list[str]]:
    """The files of each photo in the deletion order, least-wanted first: its path, then the other
    files of its RAW+JPEG pair (for `order --xmp`, which rates every file of a photo alike)."""
    rows, partners = ranked_with_partners(db)
    return [[r.path, *(p for p, _ in partners.get(r.path, ()))] for r in rows]


def _scored(db: sqlite_utils.Database) -> tuple[list[Ranked], dict[str, list[tuple[str, str]]]]:
    scores = all_scores(db)
    current = labels.current_labels(db)
    present = index.present_files(db)
    partners = _partners(present, scores)
    hidden = {p for members in partners.values() for p, _ in members}
    rows = [
        Ranked(path, score, current.get(sha) or _pair_label(partners.get(path, ()), current), sha)
        for path, sha in present
        if path not in hidden and (score := scores.get(sha)) is not None
    ]
    rows.sort(key=lambda r: (-r.score, r.path))
    return rows, partners


def _partners(present: list[tuple[str, str]], scores: dict) -> dict[str, list[tuple[str, str]]]:
    sha_of = dict(present)
    leads = pairs.leads(sha_of, lambda p: scores.get(sha_of[p]) is not None)
    return {lead: [(p, sha_of[p]) for p in others] for lead, others in leads.items()}


def _pair_label(partners, current: dict) -> str | None:
    return next((label for _, sha in partners if (label := current.get(sha))), None)


def dupe_listing(db) -> list[dict]:
    """Every group of the stored grouping plus exact copies: members best first, the keeper marked,
    and how it was chosen ("keeper_by": "learned" from the owner's choices, or "score")."""
    near = dupe_groups.groups(db)
    utility = dupes.keeper_utility(db, near)
    groups = dupes.grouped(scored_photos(db), near, utility)
    out = []
    for (kind, _), members in sorted(groups.items(), key=lambda kv: kv[1][0].path):
        firsts = {}  # content -> index of its first member: a later one is an exact copy of it
        for i, r in enumerate(members):
            firsts.setdefault(r.sha256, i)
        out.append(
            {
                "kind": "exact copies" if kind == "copies" else "near-duplicates",
                "keeper_by": "learned" if utility and kind == "near" else "score",
                "photos": [
                    {
                        "path": r.path,
                        "sha256": r.sha256,
                        "score": round(r.score, 4),
                        "label": r.label,
                        "keeper": i == 0,
                        "copy": firsts[r.sha256] != i,  # the same bytes as a photo above it
                    }
                    for i, r in enumerate(members)
                ],
            }
        )
    return out
