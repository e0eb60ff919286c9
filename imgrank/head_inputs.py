"""What a head, the prior and training read from the store, joined in one place: the per-content
parts (image and name vectors, metadata, the prior's features), a head's input matrix, the labelled
set, the library sample, and the prior's verdict for stored photos. Pure math lives in model.py and
prior.py; the SQL in vectors.py, index/rows.py, labels.py and prior.py (cues)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgrank import prior
from imgrank.errors import ImgrankError
from imgrank.model import LIBRARY_SAMPLE, assemble, feature_spec, meta_columns, spec_prompts
from imgrank.store.labels import current_labels
from imgrank.store.rows import content_facts
from imgrank.store.vectors import (
    current_model_id,
    first_embedded,
    name_key,
    name_vectors_of,
    store_dims,
    vector_rows,
)


def load_parts(db, model_id: str, shas: list[str] | None = None, prompts=None) -> dict:
    """Image vectors, file-name vectors and metadata for embedded images of one model.

    Returns {"sha256": [...], "image": N×d, "name": N×dn, "meta": N×3, "path": [...]}, and with
    `prompts` (a prior.Prompts) "prior": the prior's features for a head (prior.HEAD_FEATURES); with
    `shas`, only those (in that order; ones without a vector are left out), read from the
    database alone: the daemon scores a few new photos without loading the whole store.
    The metadata and the name come from index.content_facts: the content's own size, and the
    name of its first-seen present file, so a copy made later changes neither.
    """
    rows = vector_rows(db, model_id, shas)
    facts = content_facts(db, [r[0] for r in rows] if shas is not None else None)
    image_dim, name_dim = store_dims(db, model_id)
    paths = [facts[r[0]].path if r[0] in facts else None for r in rows]
    wanted = sorted({name_key(p) for p in paths if p})
    names = name_vectors_of(db, model_id, wanted)
    image = np.zeros((len(rows), image_dim), np.float32)
    name = np.zeros((len(rows), name_dim), np.float32)
    for i, (r, p) in enumerate(zip(rows, paths, strict=True)):
        image[i] = r[1]
        vec = names.get(name_key(p)) if p else None
        if vec is not None:
            name[i] = vec
    fact = [facts.get(r[0]) for r in rows]
    parts = {
        "sha256": [r[0] for r in rows],
        "path": paths,
        "image": image,
        "name": name,
        "meta": meta_columns(
            [f.width if f else None for f in fact],
            [f.height if f else None for f in fact],
            [f.size if f else None for f in fact],
        ),
        "image_dim": image_dim,
        "name_dim": name_dim,
    }
    if prompts is not None:
        parts["prior"] = prior.head_features(db, model_id, parts, prompts)
    return parts


def head_input(db, spec: dict, shas: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(content hashes, raw feature matrix) for scoring embedded photos with a head of this spec: every
    scorer builds the head's input here, the prior's features included when the head takes them."""
    parts = load_parts(db, spec["embed_model"], shas, prompts=spec_prompts(spec))
    return parts["sha256"], assemble(spec, parts["image"], parts["name"], parts["meta"], parts.get("prior"))


@dataclass
class LabelledSet:
    """Every labelled photo with a vector of the store's model: features, labels and their parts."""

    x: np.ndarray
    y: np.ndarray  # 1 = delete
    image: np.ndarray
    sha256: list[str]
    paths: list[str | None]
    spec: dict
    parts: dict
    labels: dict[str, str]
    no_vector: int  # labelled photos without a vector (not scanned yet)
    prior: np.ndarray | None = None  # the prior's features (prior.HEAD_FEATURES), None if not offered
    prior_spec: dict | None = None  # feature_spec["prior"] for a head that takes them
    prior_reason: str | None = None  # why they are not offered
    library: dict | None = None  # load_parts of the folder's sample (`library_sample`), labelled or not


def labelled_set(db, use_name: bool = True, use_meta: bool = True, use_prior: bool = True) -> LabelledSet:
    """Load the labelled photos once, for training and for export alike, with the prior's features
    (from the prompts file in use) where they can be computed."""
    model_id = current_model_id(db)
    labels = current_labels(db)
    parts = load_parts(db, model_id, sorted(labels))
    if not parts["sha256"]:
        raise ImgrankError(
            f"none of the {len(labels)} labelled photos has a vector from {model_id}: "
            "label some photos and run `imgrank scan`"
        )
    spec = feature_spec(model_id, parts["image_dim"], parts["name_dim"] if use_name else 0, meta=use_meta)
    y = np.array([1 if labels[s] == "delete" else 0 for s in parts["sha256"]], int)
    extra, record, reason = prior.offerable(db, model_id, parts) if use_prior else (None, None, "turned off")
    return LabelledSet(
        x=assemble(spec, parts["image"], parts["name"], parts["meta"]),
        y=y,
        image=parts["image"],
        sha256=parts["sha256"],
        paths=parts["path"],
        spec=spec,
        parts=parts,
        labels=labels,
        no_vector=len(labels) - len(parts["sha256"]),
        prior=extra,
        prior_spec=record,
        prior_reason=reason,
        library=library_sample(db, model_id),
    )


def library_sample(db, model_id: str) -> dict:
    """The parts (load_parts) of up to LIBRARY_SAMPLE of the folder's photos, labelled or not: the first
    by content hash, a uniform sample that mostly stays put as the folder grows."""
    return load_parts(db, model_id, first_embedded(db, model_id, LIBRARY_SAMPLE))


def compute_prior(
    db, model_id: str, shas: list[str] | None = None, embedder=None, prompts: prior.Prompts | None = None
) -> prior.PriorResult:
    """The prior for the given content hashes (default: every embedded photo of the model)."""
    return prior.compute_parts(db, model_id, load_parts(db, model_id, shas), embedder, prompts)


def explain_prior(db, model_id: str, shas: list[str]) -> dict[str, dict]:
    """sha256 -> why the prior scores it as it does (top prompts, cues); for the review page."""
    if not shas:
        return {}
    result = compute_prior(db, model_id, shas)
    return {s: result.why(i) for i, s in enumerate(result.sha256)}
