"""Near-duplicates and bursts: groups of near-identical shots, one keeper each; exact copies by content.

Grouping uses an approximate nearest-neighbour index (usearch's HNSW), never an all-pairs matrix:
each photo asks for its NEIGHBOURS nearest, so time and memory grow as N log N and N·k. Groups do
not chain: the photo with the most close neighbours leads a group and takes its unassigned close
neighbours, then the next, so every member is within the threshold of its group's leader (a slow
pan of fifty shots becomes several groups, not one).

Within a group the best photo (lowest deletion score: the head's, else the prior's) keeps its
rank; the others move up the deletion order (`adjust`, used by the ranking). This module owns the
`dupe_groups` table.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from imgrank.errors import ImgrankError

# Cosine similarity of image vectors at or above which two photos are near-duplicates. With CLIP-like
# models, shots of one burst (same scene, a moment apart) sit at 0.95-0.99 and two different photos of
# one subject at 0.80-0.93 (see the README); 0.95 keeps the second kind apart.
DEFAULT_THRESHOLD = 0.95
NEIGHBOURS = 16


def near_groups(vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD, k: int = NEIGHBOURS) -> np.ndarray:
    """Group id per row (the leader's row), -1 for a photo with no near-duplicate. ANN, not all pairs."""
    from usearch.index import Index

    n = len(vectors)
    group = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return group
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    # Half precision: unit vectors keep three decimals of similarity, far finer than the threshold needs,
    # in half the memory. A small build beam (expansion_add 40) is enough to find close neighbours.
    index = Index(
        ndim=v.shape[1], metric="cos", dtype="f16", connectivity=16, expansion_add=40, expansion_search=64
    )
    index.add(np.arange(n, dtype=np.uint64), v)
    found = index.search(v, min(k + 1, n))
    keys = found.keys.astype(np.int64).reshape(n, -1)
    close_mask = (found.distances.reshape(n, -1) <= 1.0 - threshold) & (keys != np.arange(n)[:, None])
    close_mask &= keys >= 0
    close = [keys[i][close_mask[i]] for i in range(n)]
    for i in np.argsort(-close_mask.sum(axis=1), kind="stable"):
        if group[i] != -1 or len(close[i]) == 0:
            continue
        members = [j for j in close[i] if group[j] == -1]
        if members:
            group[i] = i
            group[members] = i
    return group


def regroup(db, model_id: str | None = None, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Group the present photos' vectors again and store the groups. Returns counts and seconds."""
    from imgrank.model import current_model_id
    from imgrank.ranking import scored_photos
    from imgrank.vectors import load_parts

    if not 0 < threshold < 1:
        raise ImgrankError(f"--threshold must be between 0 and 1, not {threshold}")
    start = time.monotonic()
    model_id = model_id or current_model_id(db)
    present = sorted({r.sha256 for r in scored_photos(db)})
    parts = load_parts(db, model_id, present)
    group = near_groups(parts["image"], threshold)
    rows = [(sha, int(g)) for sha, g in zip(parts["sha256"], group, strict=True) if g >= 0]
    with db.atomic():
        db.execute("DELETE FROM dupe_groups")
        db.conn.executemany("INSERT INTO dupe_groups (sha256, group_id) VALUES (?, ?)", rows)
    return {
        "photos": len(parts["sha256"]),
        "groups": len({g for _, g in rows}),
        "grouped": len(rows),
        "threshold": threshold,
        "seconds": round(time.monotonic() - start, 3),
    }


def load_groups(db) -> dict[str, int]:
    """sha256 -> near-duplicate group id, as last stored."""
    return dict(db.execute("SELECT sha256, group_id FROM dupe_groups").fetchall())


def _group_key(row, near: dict[str, int], copies: set[str]):
    if row.sha256 in near:
        return ("near", near[row.sha256])
    return ("copies", row.sha256) if row.sha256 in copies else None


def grouped(rows: list, near: dict[str, int]) -> dict[tuple, list]:
    """Scored photos (ranking rows with path, score, sha256) by group: near-duplicates, exact copies."""
    per_sha = defaultdict(int)
    for r in rows:
        per_sha[r.sha256] += 1
    copies = {s for s, n in per_sha.items() if n > 1}
    out: dict[tuple, list] = defaultdict(list)
    for r in rows:
        key = _group_key(r, near, copies)
        if key is not None:
            out[key].append(r)
    return {k: sorted(v, key=lambda r: (r.score, r.path)) for k, v in out.items() if len(v) > 1}


def moved_up(score: float) -> float:
    """A non-keeper's deletion score: halfway from its own to 1 (its chance of being kept halves)."""
    return score + (1.0 - score) / 2


def adjust(rows: list, near: dict[str, int]) -> list:
    """The ranking with each group's keeper (lowest score) in place and the others moved up, resorted."""
    if not rows:
        return rows
    losers = {id(r) for members in grouped(rows, near).values() for r in members[1:]}
    if not losers:
        return rows
    out = [r._replace(score=moved_up(r.score)) if id(r) in losers else r for r in rows]
    return sorted(out, key=lambda r: (-r.score, r.path))


def listing(db) -> list[dict]:
    """Every group of the stored grouping plus exact copies: members best first, the keeper marked."""
    from imgrank.ranking import scored_photos

    groups = grouped(scored_photos(db), load_groups(db))
    out = []
    for (kind, _), members in sorted(groups.items(), key=lambda kv: kv[1][0].path):
        out.append(
            {
                "kind": "exact copies" if kind == "copies" else "near-duplicates",
                "photos": [
                    {
                        "path": r.path,
                        "sha256": r.sha256,
                        "score": round(r.score, 4),
                        "label": r.label,
                        "keeper": i == 0,
                    }
                    for i, r in enumerate(members)
                ],
            }
        )
    return out
