"""Heads: the file format, compatibility checks, features, and scoring with numpy.

This module never imports torch: the daemon scores with it. A head is one safetensors file
(weights as float32 arrays, the metadata as JSON in its header) plus a readable JSON copy of
the metadata beside it. Never pickle.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrank import config
from imgrank.errors import ModelError
from imgrank.vectors import load_parts, store_dims

HEAD_FORMAT = "imgrank-head/1"
# Cheap per-file numbers beside the embeddings: log pixel count, log aspect ratio, log file size.
META_FEATURES = ["log_pixels", "log_aspect", "log_bytes"]


@dataclass
class Head:
    """A trained head: weights (mean, std, then layer i's w{i}/b{i}) and its metadata."""

    weights: dict[str, np.ndarray]
    meta: dict
    path: Path | None = None

    @property
    def spec(self) -> dict:
        return self.meta["feature_spec"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw feature matrix (N×n_features, NaN where a metadata value is unknown) -> P(delete)."""
        mean, std = self.weights["mean"], self.weights["std"]
        h = (np.asarray(x, dtype=np.float32) - mean) / std
        h = np.where(np.isnan(h), 0.0, h).astype(np.float32)  # unknown metadata = the training mean
        n_layers = self.meta["n_layers"]
        for i in range(n_layers):
            h = h @ self.weights[f"w{i}"].T + self.weights[f"b{i}"]
            if i < n_layers - 1:
                h = np.maximum(h, 0.0)
        return 1.0 / (1.0 + np.exp(-np.clip(h[:, 0], -60, 60)))


def feature_spec(embed_model: str, image_dim: int, name_dim: int, meta: bool = True) -> dict:
    """What a feature vector is made of, in order. Stored in every head so scoring builds the same vector."""
    return {
        "embed_model": embed_model,
        "image_dim": int(image_dim),
        "name_dim": int(name_dim),
        "meta": list(META_FEATURES) if meta else [],
    }


def n_features(spec: dict) -> int:
    return spec["image_dim"] + spec["name_dim"] + len(spec["meta"])


def meta_columns(width, height, size) -> np.ndarray:
    """N×3 raw metadata (NaN where unknown) from per-file width, height and byte size."""
    w = np.array([np.nan if v is None else v for v in width], dtype=np.float64)
    h = np.array([np.nan if v is None else v for v in height], dtype=np.float64)
    s = np.array([np.nan if v is None else v for v in size], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([np.log(w * h), np.log(w / h), np.log(s)], axis=1)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def assemble(spec: dict, image: np.ndarray, name: np.ndarray | None, meta: np.ndarray | None) -> np.ndarray:
    """Concatenate the parts the spec names into the raw feature matrix."""
    parts = [np.asarray(image, dtype=np.float32)]
    if spec["name_dim"]:
        parts.append(np.asarray(name, dtype=np.float32))
    if spec["meta"]:
        parts.append(np.asarray(meta, dtype=np.float32)[:, : len(spec["meta"])])
    return np.concatenate(parts, axis=1)


def current_model_id(name: str | None = None) -> str:
    """The id the store's vectors are kept under for the configured embedding model (loads no weights)."""
    from imgrank.embed import resolve_model

    name = name or config.model_name()
    if Path(name).expanduser().is_dir():
        return resolve_model(name).model_id
    return name


def features(db, shas: list[str], spec: dict) -> np.ndarray:
    """The raw feature matrix for these content hashes (each must have a vector of the spec's model)."""
    parts = load_parts(db, spec["embed_model"], shas)
    if len(parts["sha256"]) != len(shas):
        raise ModelError(
            f"{len(shas) - len(parts['sha256'])} images have no vector from {spec['embed_model']}"
        )
    return assemble(spec, parts["image"], parts["name"], parts["meta"])


def save_head(weights: dict[str, np.ndarray], meta: dict, path: Path) -> Path:
    """Write a head: safetensors (metadata in its header) and a JSON copy beside it."""
    from safetensors.numpy import save_file

    meta = {**meta, "format": HEAD_FORMAT}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    save_file(arrays, str(path), metadata={"imgrank": json.dumps(meta)})
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_head(path: Path | str) -> Head:
    """Read a head file; refuses anything that is not an imgrank head."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"head file {path} does not exist")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = json.loads((f.metadata() or {}).get("imgrank", "{}"))
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ModelError(f"{path} is not a safetensors head: {e}") from None
    if meta.get("format") != HEAD_FORMAT:
        raise ModelError(f"{path} is not an imgrank head (no {HEAD_FORMAT} metadata)")
    head = Head(weights, meta, path)
    expected = n_features(head.spec)
    if weights["w0"].shape[1] != expected or weights["mean"].shape != (expected,):
        raise ModelError(f"{path}: weights do not match its feature spec ({expected} features)")
    return head


def check_compatible(head: Head, model_id: str, image_dim: int, name_dim: int) -> None:
    """Refuse a head built on another embedding model, or on vectors of other sizes."""
    spec = head.spec
    if spec["embed_model"] != model_id:
        raise ModelError(
            f"head was trained on embedding model {spec['embed_model']!r}, but the store uses {model_id!r}; "
            "retrain with `imgrank train` or switch the model back"
        )
    if image_dim and spec["image_dim"] != image_dim:
        raise ModelError(f"head expects {spec['image_dim']}-d image vectors, the store has {image_dim}-d")
    if spec["name_dim"] and name_dim and spec["name_dim"] != name_dim:
        raise ModelError(f"head expects {spec['name_dim']}-d name vectors, the store has {name_dim}-d")
    if spec.get("meta") and any(m not in META_FEATURES for m in spec["meta"]):
        raise ModelError(f"head uses metadata features this version does not know: {spec['meta']}")


def active_run(db) -> dict | None:
    row = db.execute("SELECT * FROM runs WHERE active = 1 ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    cols = [c.name for c in db["runs"].columns]
    return dict(zip(cols, row, strict=True))


def active_head(db, model_id: str | None = None) -> Head | None:
    """The active head, checked against the store's embedding model; None if no head is active."""
    run = active_run(db)
    if run is None:
        return None
    head = load_head(run["head_path"])
    head.meta["run_id"] = run["id"]
    model_id = model_id or current_model_id()
    check_compatible(head, model_id, *store_dims(db, model_id))
    return head


def score_all(db, model_id: str | None = None) -> int:
    """Score every embedded image of the current model with the active head; returns the count."""
    model_id = model_id or current_model_id()
    head = active_head(db, model_id)
    if head is None:
        raise ModelError("no trained head yet: label some photos and run `imgrank train`")
    return _score(db, head, load_parts(db, model_id), replace=True)


def score_unscored(db, model_id: str | None = None) -> int:
    """Score the present photos the active head has no score for (new, changed or renamed since it
    last scored: a rename drops a score, as the file name is a feature). Returns the count; 0 when
    no head is active. Raises ModelError if the active head does not fit the store."""
    model_id = model_id or current_model_id()
    head = active_head(db, model_id)
    if head is None:
        return 0
    shas = [
        r[0]
        for r in db.execute(
            """SELECT DISTINCT f.sha256 FROM files f
               JOIN vectors v ON v.sha256 = f.sha256 AND v.model = ?
               WHERE f.state = 'ok' AND NOT EXISTS
                   (SELECT 1 FROM scores s WHERE s.sha256 = f.sha256 AND s.run_id = ?)""",
            [model_id, head.meta["run_id"]],
        )
    ]
    return _score(db, head, load_parts(db, model_id, shas), replace=False) if shas else 0


def _score(db, head: Head, parts: dict, replace: bool) -> int:
    p = head.predict(assemble(head.spec, parts["image"], parts["name"], parts["meta"]))
    now = time.time()
    run_id = head.meta["run_id"]
    with db.atomic():
        if replace:
            db.execute("DELETE FROM scores")
        db.conn.executemany(
            "INSERT OR REPLACE INTO scores (sha256, run_id, score, at) VALUES (?, ?, ?, ?)",
            [(s, run_id, float(v), now) for s, v in zip(parts["sha256"], p, strict=True)],
        )
    return len(parts["sha256"])


def list_runs(db) -> list[dict]:
    """Every training run, newest first, with its headline metrics."""
    out = []
    for r in db.execute(
        "SELECT id, started_at, finished_at, counts, metrics, head_path, embed_model, active "
        "FROM runs ORDER BY id DESC"
    ):
        metrics = json.loads(r[4] or "{}")
        out.append(
            {
                "id": r[0],
                "started_at": r[1],
                "seconds": round((r[2] or r[1]) - r[1], 2),
                "counts": json.loads(r[3] or "{}"),
                "val_ap": metrics.get("mlp", {}).get("ap"),
                "val_auc": metrics.get("mlp", {}).get("roc_auc"),
                "head_path": r[5],
                "embed_model": r[6],
                "active": bool(r[7]),
            }
        )
    return out


def use_run(db, run_id: int) -> Head:
    """Make a run's head the active one, after checking it fits the store."""
    row = db.execute("SELECT head_path FROM runs WHERE id = ?", [run_id]).fetchone()
    if row is None or not row[0]:
        raise ModelError(f"no run {run_id} with a head (see `imgrank model list`)")
    head = load_head(row[0])
    model_id = current_model_id()
    check_compatible(head, model_id, *store_dims(db, model_id))
    with db.atomic():
        db.execute("UPDATE runs SET active = 0 WHERE active = 1")
        db.execute("UPDATE runs SET active = 1 WHERE id = ?", [run_id])
    return head


def import_head(db, path: Path | str) -> int:
    """Copy a head trained elsewhere into the heads folder, check it, record it as a run and activate it."""
    head = load_head(path)
    model_id = current_model_id()
    check_compatible(head, model_id, *store_dims(db, model_id))
    now = time.time()
    cur = db.execute(
        "INSERT INTO runs (started_at, finished_at, config, counts, metrics, head_path, embed_model, active) "
        "VALUES (?, ?, ?, ?, ?, NULL, ?, 0)",
        [
            now,
            now,
            json.dumps({**head.meta.get("config", {}), "imported_from": str(Path(path).resolve())}),
            json.dumps(head.meta.get("counts", {})),
            json.dumps(head.meta.get("metrics", {})),
            model_id,
        ],
    )
    run_id = cur.lastrowid
    dest = config.heads_dir() / f"head-{run_id}.safetensors"
    save_head(head.weights, {**head.meta, "run_id": run_id}, dest)
    db.execute("UPDATE runs SET head_path = ? WHERE id = ?", [str(dest), run_id])
    use_run(db, run_id)
    return run_id
