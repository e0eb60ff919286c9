"""Build a random-weight model directory in uform's layout, for tests and benchmarks.

Machines without internet cannot fetch the published weights, but code that works on this
directory works on them: the encoders come from `uform.torch_encoders` and are exported to ONNX
under uform's published interface (`images` -> `features`, `embeddings`; `input_ids`,
`attention_mask` int32 -> `features`, `embeddings`). Needs torch and onnx (the `dev` extra).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# The image encoder of uform3-image-text-english-small is a ViT-S/16 (width 384, 12 layers,
# 6 heads, 224 px) projected to 256-d; its text encoder is a small BERT. "tiny" keeps the same
# interface at a size that builds and runs in a second.
SHAPES = {
    "tiny": {
        "image": {"dim": 32, "patch_size": 32, "num_layers": 1, "num_heads": 2, "embedding_dim": 64},
        "text": {"dim": 32, "num_layers": 1, "num_heads": 2, "embedding_dim": 64, "max_len": 32},
    },
    "small": {
        "image": {"dim": 384, "patch_size": 16, "num_layers": 12, "num_heads": 6, "embedding_dim": 256},
        "text": {"dim": 256, "num_layers": 4, "num_heads": 4, "embedding_dim": 256, "max_len": 64},
    },
}

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _build_tokenizer(path: Path) -> int:
    """A WordPiece tokenizer over single characters, with BERT's special tokens. Returns vocab size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    chars = "abcdefghijklmnopqrstuvwxyz0123456789_-.()[]"
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault("##" + c, len(vocab))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(path))
    return len(vocab)


def build_model(directory: Path | str, shape: str = "tiny", seed: int = 0) -> Path:
    """Write config.json, tokenizer.json, image_encoder.onnx and text_encoder.onnx into `directory`,
    and the same weights for torch as image_encoder.pt and text_encoder.pt (uform's layout)."""
    import torch
    from uform.torch_encoders import ImageEncoder, TextEncoder

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    img, txt = SHAPES[shape]["image"], SHAPES[shape]["text"]
    vocab_size = _build_tokenizer(directory / "tokenizer.json")
    config = {
        "image_encoder": {
            **img,
            "image_size": 224,
            "pooling": "cls",
            "num_reg_tokens": 0,
            "normalization_means": CLIP_MEAN,
            "normalization_deviations": CLIP_STD,
        },
        "text_encoder": {
            "model_type": "bert",
            "dim": txt["dim"],
            "context_dim": img["dim"],
            "vocab_size": vocab_size,
            "padding_idx": 0,
            "num_layers": txt["num_layers"],
            "num_heads": txt["num_heads"],
            "embedding_dim": txt["embedding_dim"],
            "multimodal_layers_ids": [],
            "head_one_neuron": False,
            "pooling": "cls",
            "max_position_embeddings": txt["max_len"],
            "dropout_prob": 0.0,
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))

    image = ImageEncoder.from_pretrained(
        config, ImageEncoder(**_fields(ImageEncoder, config["image_encoder"])).state_dict()
    )
    text = TextEncoder.from_pretrained(
        config, TextEncoder(**_fields(TextEncoder, config["text_encoder"])).state_dict()
    )
    torch.save(image.state_dict(), directory / "image_encoder.pt")
    torch.save(text.state_dict(), directory / "text_encoder.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        _export_image(image.eval(), directory / "image_encoder.onnx")
        _export_text(text.eval(), directory / "text_encoder.onnx", txt["max_len"])
    return directory


def _fields(cls, cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k in cls.__dataclass_fields__}


def _export_image(encoder, path: Path) -> None:
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, images):
            return self.enc(images, return_features=True)

    torch.onnx.export(
        Wrapped(encoder),
        (torch.zeros(2, 3, 224, 224),),
        str(path),
        input_names=["images"],
        output_names=["features", "embeddings"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}, "embeddings": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def _export_text(encoder, path: Path, max_len: int) -> None:
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, input_ids, attention_mask):
            return self.enc(input_ids.long(), attention_mask.long(), return_features=True)

    ids = torch.zeros(2, max_len, dtype=torch.int32)
    mask = torch.ones(2, max_len, dtype=torch.int32)
    torch.onnx.export(
        Wrapped(encoder),
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["features", "embeddings"],
        dynamic_axes={k: {0: "batch"} for k in ("input_ids", "attention_mask", "features", "embeddings")},
        opset_version=17,
        dynamo=False,
    )
