"""The embedding model: local uform-layout directories, ids, preprocessing, clear failures."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from imgrank.embed import IMAGE_BATCH, IMAGE_SIZE, load_embedder, preprocess_image, to_tensor
from imgrank.errors import ModelError


def test_local_model_embeds_images_and_names(tiny_model):
    embedder = load_embedder(str(tiny_model))
    batch = np.stack([preprocess_image(Image.new("RGB", (64, 48), c)) for c in ("red", "navy")])
    vectors = embedder.embed_images(batch)
    assert vectors.shape == (2, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    names = embedder.embed_texts(["IMG_0042.jpg", "Screenshot 2024-01-01.png"])
    assert names.shape == (2, embedder.text_dim)
    assert not np.allclose(names[0], names[1])


def test_model_id_follows_the_weights_not_the_path(tiny_model, tmp_path):
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert (
        load_embedder(str(copy)).model_id.split("@")[1]
        == load_embedder(str(tiny_model)).model_id.split("@")[1]
    )
    other = tmp_path / "other"
    from imgrank.testing.tinymodel import build_model

    build_model(other, seed=1)
    assert load_embedder(str(other)).model_id != load_embedder(str(tiny_model)).model_id


@pytest.mark.parametrize("size", [(300, 900), (900, 300), (224, 224), (10, 5000)])
def test_preprocess_scales_the_shortest_side_and_centre_crops(size):
    # A portrait image with a red centre band: the centre crop must keep the red.
    img = Image.new("RGB", size, "blue")
    w, h = size
    img.paste((255, 0, 0), (w // 2 - w // 8, h // 2 - h // 8, w // 2 + w // 8 + 1, h // 2 + h // 8 + 1))
    pixels = preprocess_image(img)
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[IMAGE_SIZE // 2, IMAGE_SIZE // 2]) == (255, 0, 0)
    tensor = to_tensor(pixels[None])
    assert tensor.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and tensor.dtype == np.float32
    centre = tensor[0, :, IMAGE_SIZE // 2, IMAGE_SIZE // 2]
    assert centre[0] > 1.5 and centre[2] < 0  # red, CLIP-normalised


def test_batches_larger_than_one_inference_call_embed_each_image_alone(tiny_model):
    """embed_images splits a batch into calls of IMAGE_BATCH; each row is that image's vector."""
    embedder = load_embedder(str(tiny_model))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (IMAGE_BATCH * 2 + 3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    together = embedder.embed_images(pixels)
    alone = np.concatenate([embedder.embed_images(pixels[i : i + 1]) for i in range(len(pixels))])
    assert together.shape == (len(pixels), embedder.dim)
    assert np.allclose(together, alone, atol=1e-5)
    assert embedder.embed_images(pixels[:0]).shape == (0, embedder.dim)


def test_missing_directory_and_bad_directory_say_so(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_embedder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a uform model directory"):
        load_embedder(str(tmp_path / "empty"))


def test_hub_id_without_internet_gives_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="local directory in uform's layout"):
        load_embedder("unum-cloud/uform3-image-text-english-small")


CI_SERVICES = (
    "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "CODEBUILD_BUILD_ID", "JENKINS_URL",
    "TEAMCITY_VERSION", "TF_BUILD", "TRAVIS", "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
)  # fmt: skip


def test_embedding_leaves_no_telemetry_trace_and_the_test_sees_one_otherwise(tiny_model, tmp_path):
    """onnxruntime (from 1.29, outside Windows) writes a device id and an event database under
    ~/.cache/Microsoft and looks up Microsoft's telemetry host from every process that opens a
    session, unless ORT_DISABLE_TELEMETRY is set before it loads. Embedding through imgrank, in a
    fresh process with its own HOME, leaves no such folder; a bare onnxruntime session, in the same
    way, does (so the check can see it)."""
    import subprocess
    import sys

    image = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    codes = {
        "imgrank": (
            "import numpy as np; from PIL import Image; "
            "from imgrank.embed import Embedder, resolve_model, preprocess_image; "
            f"e = Embedder(resolve_model({str(tiny_model)!r})); "
            f"print(e.embed_images(np.stack([preprocess_image(Image.open({str(image)!r}))])).shape)"
        ),
        "bare": (
            "import onnxruntime as ort; "
            f"ort.InferenceSession({str(tiny_model / 'image_encoder.onnx')!r}, "
            "providers=['CPUExecutionProvider'])"
        ),
    }
    # onnxruntime also stays quiet where it sees a CI service (CI=true, as .ci/run sets): the
    # processes here get the environment of a user's shell
    quiet = {"ORT_DISABLE_TELEMETRY", "ORT_RUNNING_UNIT_TESTS", "CI", *CI_SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    traces = {}
    for name, code in codes.items():
        fake_home = tmp_path / name
        fake_home.mkdir()
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "HOME": str(fake_home)}
        )
        assert out.returncode == 0, out.stderr
        traces[name] = (fake_home / ".cache" / "Microsoft").exists()
    assert traces == {"imgrank": False, "bare": True}
