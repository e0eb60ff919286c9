"""Heads: the file format, its checks, features, standardisation and calibration, scoring with numpy.

This module never imports torch: the daemon scores with it. A head is one safetensors file
(weights as float32 arrays, the metadata as JSON in its header) plus a readable JSON copy of
the metadata beside it. Never pickle. A head is checked whole when it is read, so a bad one is
refused with one line before it can be activated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from imgrank import head_schema, prior
from imgrank.errors import ModelError
from imgrank.learn.head_math import Head
from imgrank.prior import check_prompts, record_problem
from imgrank.private import write_private

HEAD_FORMAT = "imgrank-head/1"
# Cheap per-file numbers beside the embeddings: log pixel count, log aspect ratio, log file size.
META_FEATURES = ["log_pixels", "log_aspect", "log_bytes"]
# Photos whose vectors shape a head's L2 prior (`logistic.input_space`): enough for the covariance of
# two 256-d blocks, few enough to load in a moment and to ship in an export.
LIBRARY_SAMPLE = 5000
MAX_TENSOR_LIST = 1 << 16  # a head's safetensors header beside its metadata: a few names and shapes


def feature_spec(
    embed_model: str, image_dim: int, name_dim: int, meta: bool = True, prior: dict | None = None
) -> dict:
    """What a feature vector is made of, in order. Stored in every head so scoring builds the same vector.

    `prior` (prior.spec_record): the head also takes the prior's features, computed with the prompt
    set it records; a head without the key (every head before them) takes none."""
    spec = {
        "embed_model": embed_model,
        "image_dim": int(image_dim),
        "name_dim": int(name_dim),
        "meta": list(META_FEATURES) if meta else [],
    }
    if prior:
        spec["prior"] = prior
    return spec


def prior_width(spec: dict) -> int:
    """How many of the prior's features a head takes (0 for a head without them)."""
    return len(spec["prior"]["features"]) if spec.get("prior") else 0


def n_features(spec: dict) -> int:
    return spec["image_dim"] + spec["name_dim"] + len(spec["meta"]) + prior_width(spec)


def meta_columns(width, height, size) -> np.ndarray:
    """N×3 raw metadata (NaN where unknown) from per-file width, height and byte size."""
    w = np.array([np.nan if v is None else v for v in width], dtype=np.float64)
    h = np.array([np.nan if v is None else v for v in height], dtype=np.float64)
    s = np.array([np.nan if v is None else v for v in size], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([np.log(w * h), np.log(w / h), np.log(s)], axis=1)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def assemble(
    spec: dict,
    image: np.ndarray,
    name: np.ndarray | None,
    meta: np.ndarray | None,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """Concatenate the parts the spec names into the raw feature matrix."""
    parts = [np.asarray(image, dtype=np.float32)]
    if spec["name_dim"]:
        parts.append(np.asarray(name, dtype=np.float32))
    if spec["meta"]:
        parts.append(np.asarray(meta, dtype=np.float32)[:, : len(spec["meta"])])
    if prior_width(spec):
        if prior is None:
            raise ModelError("this head takes the prior's features, but none were computed")
        parts.append(np.asarray(prior, dtype=np.float32))
    return np.concatenate(parts, axis=1)


def spec_prompts(spec: dict):
    """The prompt set a head's prior features are computed with (None: it takes none)."""

    return prior.record_prompts(spec["prior"]) if spec.get("prior") else None


def save_head(weights: dict[str, np.ndarray], meta: dict, path: Path) -> Path:
    """Write a head: safetensors (metadata in its header) and a JSON copy beside it."""
    from safetensors.numpy import save

    meta = {**meta, "format": HEAD_FORMAT}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    # 0600, each through a new file renamed into place: a link planted at either name is replaced
    write_private(path, save(arrays, metadata={"imgrank": json.dumps(meta)}))
    write_private(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return path


def load_head(path: Path | str) -> Head:
    """Read a head file and check it whole; refuses anything that is not a sound imgrank head."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"head file {path} does not exist")
    try:  # the header (metadata and tensor list) is read whole by safe_open: bound it first
        with open(path, "rb") as f:
            header = int.from_bytes(f.read(8), "little")
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    limit = head_schema.MAX_META_BYTES + MAX_TENSOR_LIST
    if header > limit:
        raise ModelError(
            f"{path} is not a safetensors head: its header says {header:,} bytes, more than a head has"
        )
    weights, problem = {}, None
    try:
        with safe_open(str(path), framework="np") as f:
            raw = (f.metadata() or {}).get("imgrank")
            if raw is None:
                raise ModelError(f"{path} is not an imgrank head (no {HEAD_FORMAT} metadata)")
            meta, problem = head_schema.parse(raw)  # before any weights are read
            if problem is None:
                weights = {k: f.get_tensor(k) for k in f.keys()}
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(
            f"{path} is not a safetensors head: {str(e).splitlines()[0] if str(e) else e}"
        ) from None
    problem = problem or head_problem(weights, meta)
    if problem:
        raise ModelError(f"{path} is not a usable imgrank head: {problem}")
    return Head(weights, meta, path)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _spec_problem(spec) -> str | None:
    if not isinstance(spec, dict):
        return "feature_spec is missing or not an object"
    if not isinstance(spec.get("embed_model"), str) or not spec["embed_model"]:
        return "feature_spec.embed_model is missing or not a string"
    for key, least in (("image_dim", 1), ("name_dim", 0)):
        if not _is_int(spec.get(key)) or spec[key] < least:
            return f"feature_spec.{key} is missing or not a whole number >= {least}"
    if not isinstance(spec.get("meta"), list) or any(m not in META_FEATURES for m in spec["meta"]):
        return f"feature_spec.meta must be a list of {', '.join(META_FEATURES)}"
    if spec.get("prior") is not None:
        return record_problem(spec["prior"])
    return None


def head_problem(weights: dict[str, np.ndarray], meta) -> str | None:
    """What is wrong with a head's metadata or weights, in a few words; None when it is sound."""
    if not isinstance(meta, dict):
        return "its metadata is not a JSON object"
    if meta.get("format") != HEAD_FORMAT:
        return f"format is {meta.get('format')!r}, not {HEAD_FORMAT!r}"
    problem = _spec_problem(meta.get("feature_spec"))
    if problem:
        return problem
    n_layers = meta.get("n_layers")
    if not _is_int(n_layers) or not 1 <= n_layers <= 64:
        return "n_layers is missing or not a whole number from 1 to 64"
    cal = meta.get("calibration")
    if cal is not None and not (
        isinstance(cal, dict)
        and all(isinstance(cal.get(k), (int, float)) and math.isfinite(cal[k]) for k in ("a", "b"))
        and cal["a"] > 0
    ):
        return "calibration must hold finite numbers a > 0 and b"
    bounds = (cal or {}).get("floor", 0.0), (cal or {}).get("ceiling", 1.0)
    if not (all(isinstance(v, (int, float)) for v in bounds) and 0 <= bounds[0] < bounds[1] <= 1):
        return "calibration's floor and ceiling must be numbers with 0 <= floor < ceiling <= 1"
    contrast = meta.get("contrast") or 0  # centres of the folder's clusters (`head_math.with_contrast`)
    expected = {"mean", "std"} | {f"{w}{i}" for i in range(n_layers) for w in "wb"}
    expected |= {"centroids"} if contrast else set()
    if set(weights) != expected:
        if "centroids" in set(weights) ^ expected:
            held = "centroids" if "centroids" in weights else "no centroids"
            return f"its metadata says contrast {contrast}, but it holds {held}"
        layers = sum(1 for k in weights if k[:1] == "w" and k[1:].isdigit())
        return (
            f"n_layers says {n_layers} but it holds {layers} layers of weights ({', '.join(sorted(weights))})"
        )
    width = n_features(meta["feature_spec"])
    if contrast:
        image_dim = meta["feature_spec"]["image_dim"]
        if weights["centroids"].shape != (contrast, image_dim):
            return f"centroids have shape {weights['centroids'].shape}, expected ({contrast}, {image_dim})"
        width += image_dim  # how each photo differs from its cluster's centre, after the features
    if weights["mean"].shape != (width,) or weights["std"].shape != (width,):
        return f"mean/std do not have the {width} features of its feature_spec"
    for i in range(n_layers):
        w, b = weights[f"w{i}"], weights[f"b{i}"]
        out = 1 if i == n_layers - 1 else (w.shape[0] if w.ndim == 2 else -1)
        if w.shape != (out, width) or b.shape != (out,):
            return f"layer {i} has shape {w.shape} + {b.shape}, expected ({out}, {width}) + ({out},)"
        width = out
    bad = [k for k, v in weights.items() if not np.all(np.isfinite(v))]
    if bad:
        return f"weights {', '.join(sorted(bad))} hold NaN or infinite values"
    if np.any(weights["std"] <= 0):
        return "std has values <= 0"
    return None


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
    if spec.get("prior"):
        check_prompts(spec_prompts(spec), model_id, image_dim)


def library_blocks(spec: dict, parts: dict) -> np.ndarray:
    """The leading feature blocks (image vector, name vector) of a library sample, as `assemble` lays
    them out for a head of this spec: what `logistic.input_space` takes as `library`."""
    return assemble({**spec, "meta": [], "prior": None}, parts["image"], parts["name"], None)
