"""The cold-start prior: a guess at P(delete) before any head exists, from zero-shot prompts and cheap cues.

Zero-shot: each photo's image vector against the prompts of `prompts.txt` (embedded by the model's
own text encoder), a CLIP-style softmax over the prompts, P(delete) = the sum over the `delete`
kinds. Cues measured while the photo is decoded for its embedding (blur as the variance of the
Laplacian, clipped or dark exposure, a tiny resolution) each take their share of what is left.
The measured cues are stored in the `cues` table (`imgrank.store.cues`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from imgrank import config
from imgrank.embed import load_embedder
from imgrank.errors import ImgrankError, ModelError
from imgrank.learn.recipe import HEAD_FEATURES
from imgrank.private import private_dir, write_private
from imgrank.store.cues import MEASURES, load_cues

CUE_NAMES = ("blur", "exposure", "tiny")
# Cues are measured on the decoded image brought to this long side: a drafted JPEG is already near it,
# and the Laplacian's variance depends on the scale it is measured at.
CUE_SIDE = 512


@dataclass
class Prompts:
    """The prompts file: kinds of photo (prompt, wanted?, weight), cue weights, the logit scale."""

    texts: list[str] = field(default_factory=list)
    delete: list[bool] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    cues: dict[str, float] = field(default_factory=dict)
    scale: float = 100.0
    source: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.texts, self.delete]).encode()).hexdigest()[:16]


def prompts_path() -> Path:
    """The prompts file in use: `prompts.txt` in the imgrank home if the owner put one there, else ours."""
    own = config.home_dir() / "prompts.txt"
    return own if own.is_file() else Path(str(resources.files("imgrank") / "prompts.txt"))


def parse_prompts(text: str, source: str = "prompts.txt") -> Prompts:
    """Read the prompts format (see the shipped prompts.txt). Raises ImgrankError on a bad line."""
    out = Prompts(source=source)
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split(None, 2)
        try:
            if words[0] in ("delete", "keep") and len(words) == 3:
                out.weights.append(float(words[1]))
                out.delete.append(words[0] == "delete")
                out.texts.append(words[2])
            elif words[0] == "cue" and len(words) == 3 and words[1] in CUE_NAMES:
                out.cues[words[1]] = min(1.0, max(0.0, float(words[2])))
            elif words[0] == "scale" and len(words) == 2:
                out.scale = float(words[1])
            else:
                raise ValueError
        except ValueError:
            raise ImgrankError(f"{source} line {n}: cannot read {raw.strip()!r}") from None
    if not any(out.delete) or all(out.delete) or any(w <= 0 for w in out.weights):
        raise ImgrankError(f"{source}: needs at least one `delete` and one `keep` prompt, weights above 0")
    return out


def load_prompts() -> Prompts:
    path = prompts_path()
    return parse_prompts(path.read_text(encoding="utf-8"), str(path))


# --- cues, measured in the decoding worker ---------------------------------------------------


def measure_cues(img: Image.Image) -> dict[str, float]:
    """Sharpness (variance of the Laplacian), clipped dark/bright fractions and mean of the grey image:
    the MEASURES the `cues` table stores."""
    grey = img.convert("L")
    if max(grey.size) > CUE_SIDE:
        grey.thumbnail((CUE_SIDE, CUE_SIDE), Image.BILINEAR)
    g = np.asarray(grey, dtype=np.float32)
    if min(g.shape) < 3:
        lap_var = 0.0
    else:
        lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
        lap_var = float(lap.var())
    return {
        "sharpness": lap_var,
        "dark": float((g <= 10).mean()),
        "bright": float((g >= 245).mean()),
        "mean": float(g.mean()),
    }


def _ramp(x: float, bad: float, good: float) -> float:
    """1 at `bad` or beyond, 0 at `good` or beyond, linear in between."""
    return float(min(1.0, max(0.0, (good - x) / (good - bad))))


def cue_values(measured: dict[str, float] | None, pixels: float | None) -> dict[str, float]:
    """Each cue in [0, 1] (1: strong sign of a photo to delete); NaN where it was never measured."""
    out = dict.fromkeys(CUE_NAMES, math.nan)
    if measured:
        # A Laplacian variance under ~30 on the grey image is blurred through; over ~300 is sharp.
        out["blur"] = _ramp(math.log10(measured["sharpness"] + 1.0), math.log10(30), math.log10(300))
        clipped = max(measured["dark"], measured["bright"])
        out["exposure"] = max(_ramp(-clipped, -0.6, -0.1), _ramp(measured["mean"], 25, 70))
    if pixels and pixels > 0:
        # 640×480 and more is a photo; under ~170×170 an icon or a thumbnail saved by accident.
        out["tiny"] = _ramp(math.log10(pixels), math.log10(3e4), math.log10(3e5))
    return out


# --- the prior ---------------------------------------------------------------------------------


def _prompt_vectors(prompts: Prompts, model_id: str, embedder=None) -> np.ndarray:
    """The prompts' text vectors, cached under the imgrank home per model and prompts."""
    key = hashlib.sha256(f"{model_id}\n{prompts.digest}".encode()).hexdigest()[:20]
    # Raw little-endian float32, not .npy: np.load parses its header with ast.literal_eval, and on
    # Python 3.11 the ast module's state is shared between threads (the daemon scores in one).
    cache = config.home_dir() / "prior" / f"prompts-{key}.f32"
    if cache.is_file():
        return np.fromfile(cache, dtype="<f4").reshape(len(prompts.texts), -1)
    if embedder is None or embedder.model_id != model_id:
        from imgrank.store.db import model_name, open_db  # lazy: sqlite_utils

        embedder = load_embedder(model_name(open_db()))  # the model the store's scan loaded
    if embedder.model_id != model_id:
        raise ImgrankError(f"the prior needs the text encoder of {model_id}, but {embedder.model_id} loads")
    vectors = embedder.embed_texts(prompts.texts)
    private_dir(cache.parent, config.home_dir())
    # A temporary file of its own: two scans scoring at once once shared one, and one replaced the
    # cache with the file the other was still writing (tests/test_scan.py, two scans together).
    write_private(cache, np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    return vectors


@dataclass
class PriorResult:
    """The prior for some photos: final P(delete), the prompts' part, the cues and each prompt's share."""

    sha256: list[str]
    p: np.ndarray
    p_prompts: np.ndarray
    cues: np.ndarray  # N × len(CUE_NAMES), NaN where unmeasured
    shares: np.ndarray  # N × n_prompts, softmax over the prompts
    prompts: Prompts
    measured: np.ndarray  # N × 4 raw measurements (sharpness, dark, bright, mean), NaN where unmeasured

    def why(self, i: int, n: int = 3) -> dict:
        """One photo's explanation: its top prompts and cues, for the review page."""
        top = np.argsort(-self.shares[i])[:n]
        return {
            "p": round(float(self.p[i]), 4),
            "p_prompts": round(float(self.p_prompts[i]), 4),
            "prompts": [
                {
                    "prompt": self.prompts.texts[k],
                    "kind": "delete" if self.prompts.delete[k] else "keep",
                    "share": round(float(self.shares[i, k]), 3),
                }
                for k in top
            ],
            "cues": {
                name: round(float(v), 3) for name, v in zip(CUE_NAMES, self.cues[i], strict=True) if v == v
            },
        }


def compute_parts(
    db, model_id: str, parts: dict, embedder=None, prompts: Prompts | None = None
) -> PriorResult:
    """The prior for photos already loaded by `head_inputs.load_parts`."""
    prompts = prompts or load_prompts()
    texts = _prompt_vectors(prompts, model_id, embedder)
    if texts.shape[1] != parts["image"].shape[1]:
        raise ImgrankError(
            f"the prompts' text vectors are {texts.shape[1]}-d, the store's image vectors "
            f"{parts['image'].shape[1]}-d"
        )
    logits = prompts.scale * (parts["image"] @ texts.T) + np.log(np.asarray(prompts.weights))[None, :]
    logits -= logits.max(axis=1, keepdims=True)
    shares = np.exp(logits)
    shares /= shares.sum(axis=1, keepdims=True)
    p_prompts = shares[:, np.asarray(prompts.delete, bool)].sum(axis=1)
    measured = load_cues(db, parts["sha256"])
    pixels = np.exp(parts["meta"][:, 0].astype(np.float64))  # log_pixels; NaN where unknown
    cues = np.array(
        [
            [cue_values(measured.get(s), None if np.isnan(px) else px)[c] for c in CUE_NAMES]
            for s, px in zip(parts["sha256"], pixels, strict=True)
        ],
        dtype=np.float64,
    ).reshape(len(parts["sha256"]), len(CUE_NAMES))
    weights = np.array([prompts.cues.get(c, 0.0) for c in CUE_NAMES])
    keep_left = np.prod(1 - np.nan_to_num(cues, nan=0.0) * weights[None, :], axis=1)
    p = 1 - (1 - p_prompts) * keep_left
    raw = np.array(
        [[measured[s][k] if s in measured else np.nan for k in MEASURES] for s in parts["sha256"]], np.float64
    ).reshape(len(parts["sha256"]), len(MEASURES))
    return PriorResult(parts["sha256"], p, p_prompts, cues, shares, prompts, raw)


# --- the prior as features of a head -----------------------------------------------------------

# What a head is offered: the prior's verdict (the prompts' softmax with the cue weights, as a logit:
# a non-linear summary of the image vector that a head would need many labels to learn), and the raw
# measurements behind the cues (the [0, 1] cues saturate: every sharp photo has blur 0). Per-prompt
# similarities are left out: each is a linear function of the image vector the head already has.
# Tiny resolution is in the verdict, and in the metadata's log pixel count.


def prompts_record(prompts: Prompts) -> dict:
    """The whole prompt set, as a head stores it: it scores with these, whatever prompts.txt says later."""
    return {
        "texts": list(prompts.texts),
        "delete": list(prompts.delete),
        "weights": list(prompts.weights),
        "cues": dict(prompts.cues),
        "scale": prompts.scale,
    }


def record_problem(rec) -> str | None:
    """What is wrong with a head's `feature_spec.prior`, in a few words; None when it is sound."""
    if not isinstance(rec, dict) or rec.get("features") != list(HEAD_FEATURES):
        return f"feature_spec.prior.features must be {list(HEAD_FEATURES)}"
    p = rec.get("prompts")
    if not isinstance(p, dict) or not isinstance(p.get("texts"), list) or not p["texts"]:
        return "feature_spec.prior.prompts has no prompt texts"
    n = len(p["texts"])
    ok = (
        all(isinstance(t, str) for t in p["texts"])
        and isinstance(p.get("delete"), list)
        and len(p["delete"]) == n
        and all(isinstance(d, bool) for d in p["delete"])
        and isinstance(p.get("weights"), list)
        and len(p["weights"]) == n
        and all(isinstance(w, (int, float)) and w > 0 for w in p["weights"])
        and isinstance(p.get("cues"), dict)
        and all(k in CUE_NAMES and isinstance(v, (int, float)) for k, v in p["cues"].items())
        and isinstance(p.get("scale"), (int, float))
        and math.isfinite(p["scale"])
    )
    return None if ok else "feature_spec.prior.prompts is not a readable prompt set"


def spec_record(prompts: Prompts) -> dict:
    """`feature_spec.prior` of a head that takes the prior's features."""
    return {"features": list(HEAD_FEATURES), "prompts": prompts_record(prompts)}


def record_prompts(rec: dict) -> Prompts:
    p = rec["prompts"]
    return Prompts(
        list(p["texts"]),
        list(p["delete"]),
        [float(w) for w in p["weights"]],
        dict(p["cues"]),
        float(p["scale"]),
    )


def check_prompts(prompts: Prompts, model_id: str, image_dim: int) -> None:
    """Refuse a head whose prior features cannot be computed here (ModelError, one line): the text
    vectors of its prompts need the store's model (cached under the home once computed)."""
    try:
        texts = _prompt_vectors(prompts, model_id)
    except ImgrankError as e:
        raise ModelError(
            f"head takes the prior's features, but its prompts cannot be embedded: {e}"
        ) from None
    if image_dim and texts.shape[1] != image_dim:
        raise ModelError(
            f"head's prompts embed to {texts.shape[1]}-d, the store's image vectors are {image_dim}-d"
        )


def head_features(db, model_id: str, parts: dict, prompts: Prompts, embedder=None) -> np.ndarray:
    """N×len(HEAD_FEATURES) raw features (NaN where a cue was never measured) for loaded parts."""
    result = compute_parts(db, model_id, parts, embedder, prompts)
    p = np.clip(result.p, 1e-6, 1 - 1e-6)
    sharpness, dark, bright, mean = result.measured.T
    return np.stack([np.log(p / (1 - p)), np.log10(sharpness + 1.0), dark, bright, mean], axis=1).astype(
        np.float32
    )


def offerable(db, model_id: str, parts: dict) -> tuple[np.ndarray | None, dict | None, str | None]:
    """The prior's features for loaded parts with the prompts file in use, and the feature_spec["prior"]
    of a head that takes them; or (None, None, why not) when they cannot be computed (no text encoder
    for the store's model here, a bad prompts file)."""
    try:
        prompts = load_prompts()
        return head_features(db, model_id, parts, prompts), spec_record(prompts), None
    except ImgrankError as e:
        return None, None, str(e)


def used(result) -> bool:
    """Whether a trained head takes the prior's features (`validation.offer_prior` kept them)."""
    return bool(result.metrics.get("prior_features", {}).get("used"))
