"""The embedding store: image vectors keyed by content, file-name vectors keyed by the name.

Owns the tables `vectors` and `name_vectors`; nothing else runs SQL on them. Vectors are
little-endian float32 blobs beside the embedding model id and their dimension: a vector from
another model is never mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

import numpy as np
import sqlite_utils

from imgrank.errors import NothingYet
from imgrank.files import display_name
from imgrank.store.db import IN_JSON, from_blob, get_setting, to_blob


def name_key(path: str) -> str:
    """The text a file's name vector is computed from and stored under: its lossy display name."""
    return display_name(os.path.basename(path))


def embedded(db: sqlite_utils.Database, model: str, shas: Iterable[str] | None = None) -> set[str]:
    """Content hashes that have an image vector of `model` (all, or those among `shas`)."""
    if shas is None:
        return {r[0] for r in db.execute("SELECT sha256 FROM vectors WHERE model = ?", [model])}
    return {
        r[0]
        for r in db.execute(
            f"SELECT sha256 FROM vectors WHERE model = ? AND sha256 IN {IN_JSON}",
            [model, json.dumps(list(shas))],
        )
    }


def missing_names(db: sqlite_utils.Database, model: str, names: Iterable[str]) -> list[str]:
    """Of these name keys (see name_key), those without a vector of `model`, sorted."""
    names = sorted(set(names))
    have = {
        r[0]
        for r in db.execute(
            f"SELECT name FROM name_vectors WHERE model = ? AND name IN {IN_JSON}", [model, json.dumps(names)]
        )
    }
    return [n for n in names if n not in have]


def store(
    db: sqlite_utils.Database,
    model: str,
    images: Iterable[tuple[str, np.ndarray]] = (),
    names: Iterable[tuple[str, np.ndarray]] = (),
) -> None:
    """Store image vectors (by content hash) and name vectors (by name key). Call in a transaction."""
    for sha, v in images:
        db.execute(
            "INSERT OR REPLACE INTO vectors (sha256, model, dim, vector) VALUES (?, ?, ?, ?)",
            [sha, model, len(v), to_blob(v)],
        )
    for name, v in names:
        db.execute(
            "INSERT OR REPLACE INTO name_vectors (name, model, dim, vector) VALUES (?, ?, ?, ?)",
            [name, model, len(v), to_blob(v)],
        )


def image_vectors(
    db: sqlite_utils.Database, model: str, chunk: int = 10_000
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Every image vector of `model`, ordered by content hash, in chunks of (hashes, N×dim)."""
    cursor = db.execute("SELECT sha256, vector FROM vectors WHERE model = ? ORDER BY sha256", [model])
    while rows := cursor.fetchmany(chunk):
        yield [r[0] for r in rows], np.stack([from_blob(r[1]) for r in rows])


def image_vectors_of(db: sqlite_utils.Database, model: str, shas: list[str]) -> tuple[list[str], np.ndarray]:
    """The image vectors of `model` for these content hashes, in their order (ones without a vector are
    left out): (hashes, N×dim)."""
    found = dict(
        db.execute(
            f"SELECT sha256, vector FROM vectors WHERE model = ? AND sha256 IN {IN_JSON}",
            [model, json.dumps(list(shas))],
        ).fetchall()
    )
    have = [s for s in shas if s in found]
    return have, np.stack([from_blob(found[s]) for s in have]) if have else np.zeros((0, 0), np.float32)


def first_embedded(db: sqlite_utils.Database, model: str, n: int) -> list[str]:
    """The first n content hashes with a vector of `model`, by hash: a uniform sample of the folder."""
    return [
        r[0]
        for r in db.execute("SELECT sha256 FROM vectors WHERE model = ? ORDER BY sha256 LIMIT ?", [model, n])
    ]


def store_dims(db: sqlite_utils.Database, model_id: str) -> tuple[int, int]:
    """(image_dim, name_dim) of the vectors stored for a model; 0 where there are none."""

    def one(table: str) -> int:
        row = db.execute(f"SELECT dim FROM {table} WHERE model = ? LIMIT 1", [model_id]).fetchone()
        return row[0] if row else 0

    return one("vectors"), one("name_vectors")


def vector_rows(db: sqlite_utils.Database, model_id: str, shas: list[str] | None = None) -> list[tuple]:
    """(sha256, image vector) of every embedded photo of a model, or of `shas` in their order (ones
    without a vector left out)."""
    if shas is None:
        rows = db.execute("SELECT sha256, vector FROM vectors WHERE model = ?", [model_id]).fetchall()
    else:
        found = dict(
            db.execute(
                f"SELECT sha256, vector FROM vectors WHERE model = ? AND sha256 IN {IN_JSON}",
                [model_id, json.dumps(shas)],
            ).fetchall()
        )
        rows = [(s, found[s]) for s in shas if s in found]
    return [(s, from_blob(v)) for s, v in rows]


def name_vectors_of(db: sqlite_utils.Database, model_id: str, wanted: list[str]) -> dict[str, np.ndarray]:
    """name key -> the file-name vector of a model, for the names that have one."""
    return {
        name: from_blob(blob)
        for name, blob in db.execute(
            f"SELECT name, vector FROM name_vectors WHERE model = ? AND name IN {IN_JSON}",
            [model_id, json.dumps(wanted)],
        )
    }


def current_model_id(db) -> str:
    """The id of the embedding model the store was built with (the one `scan` records)."""
    model_id = get_setting(db, "embed_model")
    if not model_id:
        raise NothingYet("nothing is embedded yet: run `imgrank scan FOLDER` first")
    return model_id
