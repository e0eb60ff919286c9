"""The image encoder through uform's torch classes, for `scan --device cuda` on a GPU machine.

Same weights, same preprocessing, same vectors (cosine >= 0.99 to the ONNX path; the tests check
it) under the same model id, so vectors made here mix with ONNX ones. On CUDA it runs in half
precision on large batches, and the CLIP normalisation is done on the GPU from the 8-bit crops the
decoding processes send. Imported only when `--device` is given: the default path needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgrank.embed import CLIP_MEAN, CLIP_STD, ModelFiles
from imgrank.errors import ModelError

# Images per call on a GPU: enough to keep it busy, small enough for any card (fp16 ViT-S/16 at
# 256 images takes well under 1 GiB of activations).
CUDA_BATCH = 256
CPU_BATCH = 8
# uform's layout: one file per encoder, or one merged file with an "image_encoder" entry.
WEIGHT_NAMES = ("image_encoder.pt", "torch_weight.pt", "weight.pt", "model.pt")


def image_weights(files: ModelFiles, source: str) -> Path:
    """The `.pt` weights of the image encoder: beside the ONNX files, or fetched from the hub."""
    folder = files.image_encoder.parent
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    if Path(source).expanduser().is_dir():
        raise ModelError(f"{source} has no torch weights ({' or '.join(WEIGHT_NAMES)}) for --device")
    from uform import Modality, get_checkpoint

    try:
        _, paths, _ = get_checkpoint(source, (Modality.IMAGE_ENCODER,), format=".pt")
    except Exception as e:
        raise ModelError(f"cannot load the torch weights of {source!r} ({type(e).__name__})") from None
    path = paths.get(Modality.IMAGE_ENCODER) if isinstance(paths, dict) else paths
    if not path:
        raise ModelError(f"model {source!r} has no torch image encoder")
    return Path(path)


class TorchImageEncoder:
    """uform's `torch_encoders.ImageEncoder` on a torch device: uint8 crops in, unit vectors out."""

    def __init__(self, files: ModelFiles, source: str, device: str):
        import torch
        from uform.torch_encoders import ImageEncoder

        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.batch = CUDA_BATCH if self.device.type == "cuda" else CPU_BATCH
        cfg = json.loads(files.config.read_text())
        try:
            state = torch.load(image_weights(files, source), map_location="cpu", weights_only=True)
            model = ImageEncoder.from_pretrained(cfg, state)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"cannot load the torch image encoder of {files.model_id}: {e}") from None
        self.model = model.eval().to(self.device, self.dtype)
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
                x = torch.from_numpy(np.ascontiguousarray(pixels[i : i + self.batch])).to(self.device)
                x = (x.permute(0, 3, 1, 2).float() * (1 / 255.0) - self.mean) / self.std
                y = self.model(x.to(self.dtype)).float()
                out.append(torch.nn.functional.normalize(y, dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
