"""The encoders through uform's torch classes, for `scan --device cuda` on a GPU machine.

Same weights, same preprocessing, same vectors (cosine >= 0.99 to the ONNX path; the tests check
it) under the same model id, so vectors made here mix with ONNX ones. On CUDA they run in half
precision on large batches, and the CLIP normalisation is done on the GPU from the 8-bit crops the
decoding processes send. File names go through the text encoder on the same device, cut to the
longest name of each batch (the ONNX graph always runs its full context of mostly padding: on a GPU
machine that was the scan's main process's largest cost). Imported only when `--device` is given:
the default path needs no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgrank.encoder_files import CLIP_MEAN, CLIP_STD, ModelFiles, read_model_config
from imgrank.errors import ModelError

# Images per call on a GPU: enough to keep it busy (an H200 embeds 128 in about 10 ms, far faster
# than 16 cores decode them), small enough for any card, and a short tail: the scan's last batch is
# embedded after the last decode.
CUDA_BATCH = 128
CPU_BATCH = 8
# uform's layout: one file per encoder, or one merged file with an "image_encoder" entry.
SHARED_NAMES = ("torch_weight.pt", "weight.pt", "model.pt")  # one file with both encoders' weights
WEIGHT_NAMES = ("image_encoder.pt", *SHARED_NAMES)
TEXT_WEIGHT_NAMES = ("text_encoder.pt", *SHARED_NAMES)


def torch_weights(files: ModelFiles, source: str, text: bool = False) -> Path:
    """The `.pt` weights of the image (or text) encoder: beside the ONNX files, or fetched from the hub."""
    folder = files.image_encoder.parent
    names = TEXT_WEIGHT_NAMES if text else WEIGHT_NAMES
    for name in names:
        if (folder / name).is_file():
            return folder / name
    if Path(source).expanduser().is_dir():
        raise ModelError(f"{source} has no torch weights ({' or '.join(names)}) for --device")
    from uform import Modality, get_checkpoint

    modality = Modality.TEXT_ENCODER if text else Modality.IMAGE_ENCODER
    try:
        _, paths, _ = get_checkpoint(source, (modality,), format=".pt")
    except Exception as e:
        raise ModelError(f"cannot load the torch weights of {source!r} ({type(e).__name__})") from None
    path = paths.get(modality) if isinstance(paths, dict) else paths
    if not path:
        raise ModelError(f"model {source!r} has no torch {'text' if text else 'image'} encoder")
    return Path(path)


def _load_encoder(files: ModelFiles, source: str, device: str, text: bool):
    """(uform's torch image or text encoder with its weights, in eval mode on `device`, the device,
    the dtype): half precision on CUDA, float32 elsewhere."""
    import torch
    from uform.torch_encoders import ImageEncoder, TextEncoder

    where = torch.device(device)
    dtype = torch.float16 if where.type == "cuda" else torch.float32
    cfg = read_model_config(files.config)
    try:
        state = torch.load(torch_weights(files, source, text), map_location="cpu", weights_only=True)
        model = (TextEncoder if text else ImageEncoder).from_pretrained(cfg, state)
    except ModelError:
        raise
    except Exception as e:
        kind = "text" if text else "image"
        raise ModelError(f"cannot load the torch {kind} encoder of {files.model_id}: {e}") from None
    return model.eval().to(where, dtype), where, dtype


class TorchImageEncoder:
    """uform's `torch_encoders.ImageEncoder` on a torch device: uint8 crops in, unit vectors out."""

    def __init__(self, files: ModelFiles, source: str, device: str):
        import torch

        self.model, self.device, self.dtype = _load_encoder(files, source, device, text=False)
        self.batch = CUDA_BATCH if self.device.type == "cuda" else CPU_BATCH
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(CLIP_MEAN, device=self.device).view(shape)
        self.std = torch.tensor(CLIP_STD, device=self.device).view(shape)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """N×224×224×3 uint8 -> N×dim float32, L2-normalised."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(pixels), self.batch):
                chunk = pixels[i : i + self.batch]
                if self.device.type == "cuda" and len(chunk) < self.batch:
                    # One input shape only: cuDNN tunes itself once per shape (costly), a padded
                    # batch costs the GPU milliseconds. The padding's rows are cut off below.
                    chunk = np.concatenate(
                        [chunk, np.zeros((self.batch - len(chunk), *chunk.shape[1:]), chunk.dtype)]
                    )
                x = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
                x = (x.permute(0, 3, 1, 2).float() * (1 / 255.0) - self.mean) / self.std
                y = self.model(x.to(self.dtype)).float()
                out.append(torch.nn.functional.normalize(y, dim=1).cpu().numpy()[: len(pixels) - i])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class TorchTextEncoder:
    """uform's `torch_encoders.TextEncoder` on a torch device: the tokens uform's TextProcessor makes
    in, unit vectors out. Each batch is cut to its longest name: the padding after it is masked out
    of attention and the vector is read at the first token, so cutting changes nothing but the cost."""

    def __init__(self, files: ModelFiles, source: str, device: str):
        self.model, self.device, self.dtype = _load_encoder(files, source, device, text=True)
        if self.model.pooling != "cls" or self.model.model_type != "bert":
            raise ModelError(f"{files.model_id}: only a BERT text encoder read at its first token can be cut")

    def __call__(self, tokens: dict) -> np.ndarray:
        """uform TextProcessor output (input_ids, attention_mask: N×context) -> N×dim, L2-normalised."""
        import torch

        mask = np.asarray(tokens["attention_mask"])
        length = max(1, int(mask.sum(axis=1).max())) if len(mask) else 1
        with torch.inference_mode():
            ids, att = (
                torch.from_numpy(np.ascontiguousarray(a[:, :length])).long().to(self.device)
                for a in (tokens["input_ids"], mask)
            )
            y = self.model(ids, att).float()
            return torch.nn.functional.normalize(y, dim=1).cpu().numpy()
