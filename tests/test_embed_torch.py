"""The torch image encoder (`scan --device`, for CUDA): same weights as ONNX, same vectors, same store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from images import photo
from PIL import Image

from imgrank.cli import cli
from imgrank.embed import load_embedder, preprocess_image
from imgrank.store.db import from_blob, open_db


def crops(folder, n=6) -> np.ndarray:
    """Preprocessed crops of n real photos of different content and shape."""
    sizes = [(320, 240), (240, 320), (500, 260)]
    paths = [photo(folder / f"p{i}.jpg", seed=i, size=sizes[i % 3]) for i in range(n)]
    return np.stack([preprocess_image(Image.open(p)) for p in paths])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_torch_and_onnx_give_the_same_vectors_for_the_same_weights(tiny_model, tmp_path):
    pixels = crops(tmp_path)
    onnx = load_embedder(str(tiny_model))
    torch_cpu = load_embedder(str(tiny_model), device="cpu")
    assert torch_cpu.model_id == onnx.model_id  # one store, whichever backend made a vector
    a, b = onnx.embed_images(pixels), torch_cpu.embed_images(pixels)
    assert a.shape == b.shape == (len(pixels), onnx.dim)
    assert cosine(a, b).min() >= 0.99
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # Each photo's two vectors agree more than two different photos do: the weights are really the same.
    cross = cosine(a, np.roll(b, 1, axis=0))
    assert cross.max() < cosine(a, b).min()
    assert torch_cpu.embed_images(pixels[:0]).shape == (0, onnx.dim)


NAMES = [
    "IMG_0001.jpg",
    "Screenshot 2024-03-07 at 10.41.22.png",
    "holiday/beach with the kids, evening light.heic",
    "a",
    "DSC00042 (copy 2).JPG",
    "receipt.png",
]


def test_torch_text_encoder_gives_the_onnx_name_vectors_with_the_padding_cut(tiny_model):
    onnx = load_embedder(str(tiny_model))
    torch_cpu = load_embedder(str(tiny_model), device="cpu")
    a, b = onnx.embed_texts(NAMES), torch_cpu.embed_texts(NAMES)
    assert a.shape == b.shape == (len(NAMES), onnx.text_dim)
    assert cosine(a, b).min() >= 0.99
    assert cosine(a, np.roll(b, 1, axis=0)).max() < cosine(a, b).min()  # really the same weights
    # A batch is cut to its longest name: alone, a short name is cut far shorter, and gives the same vector.
    alone = np.concatenate([torch_cpu.embed_texts([n]) for n in NAMES])
    assert np.abs(alone - b).max() < 1e-4
    tokens = torch_cpu._tokens(NAMES[:1])
    assert tokens["attention_mask"].sum() < tokens["input_ids"].shape[1] / 2  # there was padding to cut


def store_vectors() -> dict[str, np.ndarray]:
    db = open_db()
    return {sha: from_blob(blob) for sha, blob in db.execute("SELECT sha256, vector FROM vectors")}


def test_scan_with_a_torch_device_fills_the_store_as_onnx_does(model_env, tmp_path, monkeypatch):
    for i in range(10):
        photo(tmp_path / "photos" / f"IMG_{i:03d}.jpg", seed=i)
    runs = {}
    for name, extra in (("onnx", []), ("torch", ["--device", "cpu"])):
        monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / name))
        result = CliRunner().invoke(cli, ["scan", str(tmp_path / "photos"), "--json", *extra])
        assert result.exit_code == 0, result.output
        assert result.exception is None
        assert json.loads(result.output)["embedded"] == 10
        runs[name] = store_vectors()
    assert runs["onnx"].keys() == runs["torch"].keys() and len(runs["onnx"]) == 10
    shas = sorted(runs["onnx"])
    a = np.stack([runs["onnx"][s] for s in shas])
    b = np.stack([runs["torch"][s] for s in shas])
    assert cosine(a, b).min() >= 0.99


def test_device_needs_torch_weights_and_says_so(model_env, tmp_path):
    bare = tmp_path / "onnx-only"
    shutil.copytree(model_env, bare, ignore=shutil.ignore_patterns("*.pt"))
    photo(tmp_path / "photos" / "a.jpg")
    result = CliRunner().invoke(
        cli, ["scan", str(tmp_path / "photos"), "--model", str(bare), "--device", "cpu"]
    )
    assert result.exit_code == 1
    assert "has no torch weights" in result.output and "image_encoder.pt" in result.output


def test_the_default_path_never_imports_torch(tiny_model, tmp_path):
    code = f"""
import sys
import numpy as np
from imgrank.embed import load_embedder
e = load_embedder({str(tiny_model)!r})
assert e.embed_images(np.zeros((2, 224, 224, 3), np.uint8)).shape == (2, e.dim)
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cuda_where_there_is_a_gpu(tiny_model, tmp_path, device):
    """On a GPU machine: fp16 on CUDA, still within 0.99 of ONNX (skipped without one)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    pixels = crops(tmp_path)
    gpu = load_embedder(str(tiny_model), device=device)
    assert gpu.scan_batch >= 128
    onnx = load_embedder(str(tiny_model))
    assert cosine(onnx.embed_images(pixels), gpu.embed_images(pixels)).min() >= 0.99
    assert cosine(onnx.embed_texts(NAMES), gpu.embed_texts(NAMES)).min() >= 0.99
