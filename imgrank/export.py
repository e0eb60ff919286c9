"""Parquet export of labelled vectors, for training on another machine (`train --data FILE`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgrank.errors import ImgrankError
from imgrank.model import META_FEATURES
from imgrank.prior import record_problem
from imgrank.private import private_output

SCHEMA_KEY = b"imgrank"


def export_parquet(db, path: str | Path) -> dict:
    """Write every labelled photo's image vector, name vector, metadata, the prior's features (with the
    prompt set they were computed with, in the spec) and label to Parquet; then the folder's library
    sample (`head_inputs.library_sample`: vectors and metadata, label and prior's features empty), which
    shapes the head's L2 prior, so a head trained elsewhere is the head `train` would make here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from imgrank.head_inputs import labelled_set  # lazy: sqlite_utils

    data = labelled_set(db)
    parts, spec, labels = data.parts, data.spec, data.labels
    if data.prior is not None:
        spec = {**spec, "prior": data.prior_spec}
    prior_columns = {f: pa.array(data.prior[:, i], pa.float32()) for i, f in enumerate(prior_features(spec))}

    def vectors(a: np.ndarray) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(a, np.float32).ravel(), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, max(a.shape[1], 1)) if a.shape[1] else pa.nulls(len(a))

    library = data.library
    n_library = len(library["sha256"])

    def both(key: str) -> np.ndarray:
        return np.concatenate([parts[key], library[key]]).astype(np.float32)

    table = pa.table(
        {
            "sha256": parts["sha256"] + library["sha256"],
            "label": [labels[s] for s in parts["sha256"]] + [None] * n_library,
            "image": vectors(both("image")),
            "name": vectors(both("name")),
            **{m: pa.array(both("meta")[:, i], pa.float32()) for i, m in enumerate(spec["meta"])},
            **{f: pa.concat_arrays([a, pa.nulls(n_library, pa.float32())]) for f, a in prior_columns.items()},
        }
    )
    table = table.replace_schema_metadata({SCHEMA_KEY: json.dumps(spec).encode()})
    try:
        with private_output(path) as f:  # 0600: the labels are private
            pq.write_table(table, f)
    except OSError as e:
        raise ImgrankError(f"cannot write {path}: {e.strerror or e}") from None
    return {"path": str(path), "rows": len(parts["sha256"]), "library_rows": n_library, "feature_spec": spec}


def prior_features(spec: dict) -> list[str]:
    """The prior's feature columns an export holds (none in an export made before them)."""
    return list(spec["prior"]["features"]) if spec.get("prior") else []


MAX_DIM = 1 << 16  # no embedding is wider; a bigger number in a spec is a crafted one


def read_parquet(path: str | Path) -> dict:
    """Read an export: {"spec", "sha256", "y", "image", "name", "meta", "prior"} of the labelled rows as
    numpy arrays ("prior": None when the export has no prior features), and "library": the library
    sample's {"sha256", "image", "name", "meta"} (None in an export made before it had one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except Exception as e:
        raise ImgrankError(f"cannot read {path} as Parquet: {e}") from None
    meta = table.schema.metadata or {}
    if SCHEMA_KEY not in meta:
        raise ImgrankError(f"{path} is not an imgrank export (no feature spec in its metadata)")
    try:
        spec = json.loads(meta[SCHEMA_KEY])
    except ValueError:
        raise ImgrankError(f"{path} has a damaged feature spec: not JSON") from None
    problem = spec_problem(spec, table.column_names)
    if problem:
        raise ImgrankError(f"{path} has a damaged feature spec: {problem}")
    if spec.get("prior") is not None:
        problem = record_problem(spec["prior"])
        if problem or not set(prior_features(spec)) <= set(table.column_names):
            raise ImgrankError(f"{path} has a damaged prior feature spec: {problem or 'columns missing'}")
    try:
        data = _arrays(table, spec)
    except (ValueError, TypeError, AttributeError, pa.ArrowException) as e:  # wrong column types or lengths
        raise ImgrankError(f"{path} has damaged columns: {str(e).splitlines()[0] if str(e) else e}") from None
    problem = _values_problem(data)
    if problem:
        raise ImgrankError(f"{path}: {problem}")
    return data


def spec_problem(spec, columns: list[str]) -> str | None:
    """What is wrong with an export's feature spec (types, bounds, its columns), in a few words."""

    if not isinstance(spec, dict):
        return "not a JSON object"
    if not isinstance(spec.get("embed_model"), str):
        return "embed_model is not a string"
    for key, low in (("image_dim", 1), ("name_dim", 0)):
        if type(spec.get(key)) is not int or not low <= spec[key] <= MAX_DIM:
            return f"{key} must be a whole number from {low} to {MAX_DIM}"
    meta = spec.get("meta")
    if not isinstance(meta, list) or not all(m in META_FEATURES for m in meta) or len(set(meta)) != len(meta):
        return f"meta must list some of {META_FEATURES}"
    needed = ["sha256", "label", "image", *(["name"] if spec["name_dim"] else []), *meta]
    missing = [c for c in needed if c not in columns]
    return f"columns missing: {', '.join(missing)}" if missing else None


def _values_problem(data: dict) -> str | None:
    """Vectors must be finite numbers (a NaN one trained a NaN head); metadata may be NaN (unknown)."""
    blocks = [data] if data["library"] is None else [data, data["library"]]
    for rows in blocks:
        for key in ("image", "name"):
            if not np.isfinite(rows[key]).all():
                return f"{key} vectors hold non-finite numbers (NaN or infinity): export them again"
        if np.isinf(rows["meta"]).any():
            return "metadata columns hold infinities: export them again"
    if data["prior"] is not None and np.isinf(data["prior"]).any():
        return "prior feature columns hold infinities: export them again"
    return None


def _arrays(table, spec: dict) -> dict:
    """The labelled rows and the library sample of a checked export, as numpy arrays."""
    n = table.num_rows

    def matrix(column: str, dim: int) -> np.ndarray:
        if not dim:
            return np.zeros((n, 0), np.float32)
        flat = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, np.float32).reshape(n, dim)

    labels = table.column("label").to_pylist()
    if not set(labels) <= {None, "keep", "delete"}:
        raise ValueError("labels other than keep and delete")
    labelled = np.array([v is not None for v in labels], bool)
    sha256 = table.column("sha256").to_pylist()
    image, name = matrix("image", spec["image_dim"]), matrix("name", spec["name_dim"])

    def columns(names: list[str]) -> np.ndarray:
        if not names:
            return np.zeros((n, 0), np.float32)
        return np.stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in names], axis=1
        )

    meta = columns(spec["meta"])
    prior = columns(prior_features(spec))[labelled] if prior_features(spec) else None

    def rows(keep: np.ndarray) -> dict:
        return {
            "sha256": [s for s, k in zip(sha256, keep, strict=True) if k],
            "image": image[keep],
            "name": name[keep],
            "meta": meta[keep],
        }

    return {
        "spec": spec,
        **rows(labelled),
        "y": np.array([1 if v == "delete" else 0 for v in labels if v is not None], int),
        "prior": prior,
        "library": rows(~labelled) if not labelled.all() else None,
    }
