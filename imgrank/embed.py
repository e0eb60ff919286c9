"""Embedding models: load (hub id or local directory), preprocess, batch.

The encoders run through uform's own ONNX classes; preprocessing is imgrank's own because
uform's numpy processor mishandles portrait images (it scales the wrong side). With a torch
device (`scan --device cuda`), images go through uform's torch encoder instead (embed_torch.py);
file names stay on ONNX.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from imgrank import config
from imgrank.devices import resolve_device
from imgrank.embed_torch import TorchImageEncoder, TorchTextEncoder
from imgrank.encoder_files import CLIP_MEAN, CLIP_STD, ModelFiles, read_model_config
from imgrank.errors import ModelError

# onnxruntime's Linux and macOS builds (from 1.29) keep a device id and an event database under
# ~/.cache/Microsoft and look up Microsoft's telemetry host every half minute from each process that
# opens a model: the daemon too. A photo tool that promises to stay on the machine opts out before
# onnxruntime is first loaded; a user who wants it sets ORT_DISABLE_TELEMETRY=0 themselves.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

IMAGE_SIZE = 224
TEXT_BATCH = 256
# Images per inference call. On two AVX2 cores a ViT-S/16 runs 10-20% faster in batches of 8
# than of 32: the activations of a small batch stay in cache.
IMAGE_BATCH = 8


def preprocess_image(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB image -> uint8 size×size×3: shortest side to `size` (bicubic), centre crop.

    Pixels stay 8-bit until the batch is embedded (`Embedder.embed_images` normalises them): a
    decoding process sends a quarter of the bytes a float32 tensor would take.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def to_tensor(pixels: np.ndarray) -> np.ndarray:
    """uint8 N×size×size×3 -> float32 N×3×size×size with CLIP normalisation."""
    arr = (pixels.astype(np.float32) * (1 / 255.0) - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _local_files(directory: Path) -> ModelFiles:
    def need(*names: str) -> Path:
        for name in names:
            if (directory / name).is_file():
                return directory / name
        raise ModelError(f"{directory} is not a uform model directory: no {' or '.join(names)}")

    files = ModelFiles(
        model_id="",
        config=need("config.json", "torch_config.json"),
        image_encoder=need("image_encoder.onnx"),
        text_encoder=need("text_encoder.onnx"),
        tokenizer=need("tokenizer.json"),
    )
    # A local directory is identified by its weights, so two copies of one model share vectors
    # and a different model in the same place never mixes its vectors in.
    digest = hashlib.sha256()
    for path in (files.image_encoder, files.text_encoder):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    files.model_id = f"{directory.name}@{digest.hexdigest()[:12]}"
    files.source = str(directory)
    return files


def _hub_files(name: str) -> ModelFiles:
    from uform import Modality, get_checkpoint

    try:
        config_path, paths, tokenizer = get_checkpoint(
            name, (Modality.IMAGE_ENCODER, Modality.TEXT_ENCODER), format=".onnx"
        )
    except Exception as e:  # network, auth, missing repo: all end in the same advice
        raise ModelError(
            f"cannot load model {name!r} from the hub ({type(e).__name__}). Three ways to get it: "
            "connect to the internet once and imgrank downloads it; or on a machine that has it run "
            f"`huggingface-cli download {name} --local-dir DIR`, copy DIR here and run "
            "`imgrank scan --model DIR` (the store remembers it); or set IMGRANK_MODEL=DIR "
            "(DIR: a local directory in uform's layout)"
        ) from None
    if (
        not isinstance(paths, dict)
        or Modality.IMAGE_ENCODER not in paths
        or Modality.TEXT_ENCODER not in paths
    ):
        raise ModelError(f"model {name!r} has no ONNX image and text encoders")
    return ModelFiles(
        source=name,
        model_id=name,
        config=Path(config_path),
        image_encoder=Path(paths[Modality.IMAGE_ENCODER]),
        text_encoder=Path(paths[Modality.TEXT_ENCODER]),
        tokenizer=Path(tokenizer),
    )


def resolve_model(name: str | None = None) -> ModelFiles:
    """Find a model's files: a local directory in uform's layout, else a hub id fetched by uform."""
    name = name or config.model_name()
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_files(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model directory {name} does not exist")
    return _hub_files(name)


def _session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # Idle ORT threads sleep instead of spinning: during a scan they share the cores with the
    # decoding processes, and spinning threads take the time those would decode in.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class Embedder:
    """Image and file-name text embeddings from one model, L2-normalised float32."""

    # Images a scan gathers before each embedding call and commit (None: the scan's own default).
    scan_batch: int | None = None

    def __init__(self, files: ModelFiles, threads: int | None = None, image_encoder=None, text_encoder=None):
        import onnxruntime as ort
        from uform.numpy_processors import TextProcessor
        from uform.onnx_encoders import ImageEncoder, TextEncoder, available_providers

        self.model_id = files.model_id
        self.source = files.source
        cfg = read_model_config(files.config)
        self.dim = cfg["image_encoder"]["embedding_dim"]
        self.text_dim = cfg["text_encoder"]["embedding_dim"]
        providers = available_providers("cpu")
        options = _session_options(threads)
        try:
            # uform's encoder classes, with imgrank's thread settings on their sessions.
            self._torch_image = image_encoder  # a TorchImageEncoder, or None: ONNX
            self._torch_text = text_encoder  # a TorchTextEncoder, or None: ONNX
            if image_encoder is None:
                self._image = ImageEncoder.__new__(ImageEncoder)
                self._image.return_features = False
                self._image.session = ort.InferenceSession(
                    str(files.image_encoder), options, providers=providers
                )
            else:
                self.scan_batch = image_encoder.batch
            self._text = TextEncoder.__new__(TextEncoder)
            self._text.return_features = False
            self._text.text_encoder_session = ort.InferenceSession(
                str(files.text_encoder), options, providers=providers
            )
            self._tokens = TextProcessor(str(files.config), str(files.tokenizer))
        except Exception as e:
            raise ModelError(f"cannot load model {files.model_id}: {e}") from None

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """N×224×224×3 uint8 (see preprocess_image) -> N×dim."""
        if self._torch_image is not None:
            return self._torch_image(pixels) if len(pixels) else np.zeros((0, self.dim), np.float32)
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(pixels), IMAGE_BATCH):
            out.append(_normalise(self._image.encode(to_tensor(pixels[i : i + IMAGE_BATCH]))))
        return np.concatenate(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """N strings -> N×text_dim."""
        out = [np.zeros((0, self.text_dim), np.float32)]
        for i in range(0, len(texts), TEXT_BATCH):
            tokens = self._tokens(texts[i : i + TEXT_BATCH])
            if self._torch_text is not None:
                out.append(self._torch_text(tokens))
            else:
                out.append(_normalise(self._text.encode(tokens)))
        return np.concatenate(out)


def load_embedder(name: str | None = None, threads: int | None = None, device: str | None = None) -> Embedder:
    """Load the embedding model named (hub id or local directory), default $IMGRANK_MODEL or uform3-small.

    `device` (cpu, cuda, auto): the image encoder runs through torch there, in half precision on
    CUDA; without it, through ONNX on the CPU (no torch imported).
    """
    files = resolve_model(name)
    image_encoder = text_encoder = None
    if device:
        source, where = name or config.model_name(), resolve_device(device)
        image_encoder = TorchImageEncoder(files, source, where)
        text_encoder = TorchTextEncoder(files, source, where)
    return Embedder(files, threads=threads, image_encoder=image_encoder, text_encoder=text_encoder)
