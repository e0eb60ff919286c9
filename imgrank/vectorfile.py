"""Image vectors to and from Parquet: embed a backlog on a GPU machine, bring the vectors home.

The file holds one row per content hash (sha256 -> float32 vector, and the prior's cues measured
while that machine decoded the photo, null where none were) and, in its schema metadata, the
embedding model id and dimension. Importing refuses another model's vectors, so a store is never
mixed. Once imported, `scan` at home reads and hashes each photo but decodes and embeds none whose
content already has a vector, so the cues come with the vectors: the prior and the heads that take
its features need them. Files without the cue columns (older ones) import as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from imgrank import config
from imgrank.embed import resolve_model
from imgrank.errors import ImgrankError
from imgrank.private import private_output
from imgrank.store import vectors
from imgrank.store.cues import MEASURES, load_cues, store_cues
from imgrank.store.db import get_setting

META_KEY = b"imgrank-vectors"
FORMAT = 1
CHUNK = 10_000  # rows read or written at a time: memory stays flat for any store
_SHA256 = re.compile(r"[0-9a-f]{64}")


def store_model(db, model: str | None = None) -> str:
    """The model id whose vectors this store keeps: the one `scan` recorded, else the configured one."""

    recorded = get_setting(db, "embed_model")
    if recorded and not model:
        return recorded

    name = model or config.model_name()
    # A local directory's id comes from its weights (no model is loaded); a hub id is its own id.
    return resolve_model(name).model_id if Path(name).expanduser().is_dir() else name


def export_vectors(db, path: str | Path) -> dict:
    """Write every image vector of the store's model to a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = get_setting(db, "embed_model")
    if not model:
        raise ImgrankError("nothing is embedded yet: run `imgrank scan FOLDER` first")
    dim = vectors.store_dims(db, model)[0]
    if not dim:
        raise ImgrankError(f"no image vectors of {model} in this store: run `imgrank scan` first")
    meta = {"model": model, "dim": dim, "format": FORMAT}
    schema = pa.schema(
        [("sha256", pa.string()), ("vector", pa.list_(pa.float32(), dim))]
        + [(m, pa.float64()) for m in MEASURES],
        metadata={META_KEY: json.dumps(meta).encode()},
    )
    try:
        with private_output(path) as f, pq.ParquetWriter(f, schema) as writer:  # 0600
            rows = _write_vectors(db, model, dim, schema, writer)
    except OSError as e:
        raise ImgrankError(f"cannot write {path}: {e.strerror or e}") from None
    return {"path": str(path), "vectors": rows, **meta}


def _write_vectors(db, model: str, dim: int, schema, writer) -> int:
    import pyarrow as pa

    rows = 0
    for shas, matrix in vectors.image_vectors(db, model, CHUNK):
        flat = pa.array(np.ascontiguousarray(matrix, np.float32).ravel(), pa.float32())
        vec = pa.FixedSizeListArray.from_arrays(flat, dim)
        cues = load_cues(db, shas)
        measured = [
            pa.array([cues[s][m] if s in cues else None for s in shas], pa.float64()) for m in MEASURES
        ]
        writer.write_table(pa.table([pa.array(shas, pa.string()), vec, *measured], schema=schema))
        rows += len(shas)
    return rows


def _open(path: str | Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(str(path))
    except Exception as e:
        raise ImgrankError(f"cannot read {path} as Parquet: {e}") from None
    raw = (reader.schema_arrow.metadata or {}).get(META_KEY)
    if raw is None:
        raise ImgrankError(f"{path} is not an imgrank vectors file (made by `imgrank export-vectors`)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise ImgrankError(f"{path} has damaged metadata: not JSON") from None
    if not isinstance(meta, dict):
        raise ImgrankError(f"{path} has damaged metadata: not a JSON object")
    if not {"sha256", "vector"} <= set(reader.schema_arrow.names):
        raise ImgrankError(f"{path} has no sha256 and vector columns")
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        raise ImgrankError(
            f"{path} is a vectors file of format {found!r:.40}; this imgrank reads format {FORMAT}"
        )
    if (
        not isinstance(meta.get("model"), str)
        or type(meta.get("dim")) is not int
        or not 1 <= meta["dim"] <= 1 << 16
    ):
        raise ImgrankError(f"{path} has damaged metadata: model must be a string and dim a whole number")
    vector = reader.schema_arrow.field("vector").type
    if not (pa.types.is_list(vector) or pa.types.is_fixed_size_list(vector)) or not pa.types.is_floating(
        vector.value_type
    ):
        raise ImgrankError(f"{path} has a vector column of {vector}, not lists of numbers")
    return reader, meta


def import_vectors(db, path: str | Path, model: str | None = None) -> dict:
    """Add a vectors file's vectors to the store, if they are of its model; returns counts."""
    reader, meta = _open(path)
    want = store_model(db, model)
    if meta["model"] != want:
        raise ImgrankError(
            f"{path} holds vectors of {meta['model']}, but this store embeds with {want}: "
            "embed with the same model there (`--model`), or nothing would match"
        )
    dim = int(meta["dim"])
    have_dim = vectors.store_dims(db, want)[0]
    if have_dim and have_dim != dim:
        raise ImgrankError(f"{path} has {dim}-d vectors, this store's {want} vectors are {have_dim}-d")
    added = already = cued = 0
    has_cues = set(MEASURES) <= set(reader.schema_arrow.names)
    columns = ["sha256", "vector", *(MEASURES if has_cues else ())]
    with db.atomic():  # all or nothing: a bad row anywhere leaves the store as it was
        for batch in reader.iter_batches(batch_size=CHUNK, columns=columns):
            shas = batch.column(0).to_pylist()
            matrix = _matrix(batch.column(1), len(shas), dim, path)
            if not all(isinstance(s, str) and _SHA256.fullmatch(s) for s in shas):
                raise ImgrankError(f"{path} has a row whose sha256 is not 64 lower-case hex digits")
            have = vectors.embedded(db, want, shas)
            new = [(s, v) for s, v in zip(shas, matrix, strict=True) if s not in have]
            vectors.store(db, want, images=new)
            added += len(new)
            already += len(shas) - len(new)
            if has_cues:
                cued += _import_cues(
                    db, shas, [batch.column(2 + i).to_pylist() for i in range(len(MEASURES))]
                )
    return {"path": str(path), "model": want, "dim": dim, "imported": added, "already": already, "cues": cued}


def _import_cues(db, shas: list[str], columns: list[list]) -> int:
    """Store the file's cues for contents this store has measured none for; returns how many."""
    known = load_cues(db, shas)
    rows = []
    for i, sha in enumerate(shas):
        values = [col[i] for col in columns]
        if sha in known or any(v is None or not np.isfinite(v) for v in values):
            continue
        rows.append((sha, dict(zip(MEASURES, values, strict=True))))
    store_cues(db, rows)
    return len(rows)


def _matrix(column, n: int, dim: int, path) -> np.ndarray:
    """N×dim float32 from a list column; refuses nulls, other lengths and non-finite values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise ImgrankError(f"{path} has rows without a vector")
    if pa.types.is_fixed_size_list(column.type):
        right_length = column.type.list_size == dim
    else:
        right_length = n == 0 or pc.all(pc.equal(pc.list_value_length(column), dim)).as_py()
    if not right_length:
        raise ImgrankError(f"{path} has vectors that are not {dim}-d")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, np.float32).reshape(n, dim)
    if not np.isfinite(matrix).all():
        raise ImgrankError(f"{path} has vectors with NaN or infinite values")
    return matrix
