"""What the image encoders share, whichever runs them (ONNX in embed.py, torch in embed_torch.py):
CLIP's pixel normalisation, a model's files, and its checked config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrank.errors import ModelError

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@dataclass
class ModelFiles:
    """Paths of a model in uform's layout, and the id its vectors are stored under."""

    model_id: str
    config: Path
    image_encoder: Path
    text_encoder: Path
    tokenizer: Path
    source: str = ""  # how to load it again: the hub id, or the directory's absolute path


# The numbers of a model's config.json that imgrank and uform's text processor use, with their
# bounds: a crafted config fails here in one line, not in a KeyError or a 10^12-entry array.
CONFIG_INTS = {
    "image_encoder": {"embedding_dim": (1, 1 << 16)},
    "text_encoder": {
        "embedding_dim": (1, 1 << 16),
        "max_position_embeddings": (1, 1 << 16),
        "padding_idx": (0, 1 << 31),
    },
}


def read_model_config(path: Path) -> dict:
    """A model's config.json, checked for what imgrank reads from it. Raises ModelError."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} is not a readable model config: {str(e).splitlines()[0]}") from None
    for part, keys in CONFIG_INTS.items():
        section = cfg.get(part) if isinstance(cfg, dict) else None
        if not isinstance(section, dict):
            raise ModelError(f"{path} is not a uform model config: no {part!r} section")
        for key, (low, high) in keys.items():
            value = section.get(key)
            if type(value) is not int or not low <= value <= high:
                raise ModelError(
                    f"{path}: {part}.{key} must be a whole number from {low} to {high}, not {value!r:.40}"
                )
    return cfg
