"""The cold-start prior: prompts file, cues measured while decoding, and the order with no head."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from images import photo
from PIL import Image, ImageFilter

from imgrank import config, prior
from imgrank.cli import cli
from imgrank.db import open_db
from imgrank.errors import ImgrankError
from imgrank.model import current_model_id
from imgrank.runs import score_source


def _detailed(path, seed: int, size=(800, 600)):
    """A sharp, well exposed 'photo': blocks of colour with hard edges, and noise."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(30, 225, size=(size[1] // 40, size[0] // 40, 3)).astype(np.uint8)
    img = Image.fromarray(blocks).resize(size, Image.NEAREST)
    arr = np.clip(np.asarray(img, float) + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=92)
    return path


def invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    assert result.exception is None
    return result


def test_shipped_prompts_parse_with_both_kinds_and_every_cue():
    p = prior.load_prompts()
    assert "a blurry photo" in p.texts and "a photo of friends and family" in p.texts
    assert any(p.delete) and not all(p.delete)
    assert set(p.cues) == set(prior.CUE_NAMES)
    assert p.scale == 100


@pytest.mark.parametrize(
    "text, message",
    [
        ("delete 1.0 a blurry photo\n", "at least one `delete` and one `keep`"),
        ("delete x a blurry photo\nkeep 1 a dog\n", "line 1"),
        ("keep 1 a dog\ndelete 1 a cat\ncue sparkle 1\n", "line 3"),
    ],
)
def test_bad_prompts_file_is_one_clear_error(text, message):
    with pytest.raises(ImgrankError, match=message):
        prior.parse_prompts(text)


def test_cues_tell_blurred_dark_and_tiny_from_a_good_photo(tmp_path):
    good = Image.open(_detailed(tmp_path / "good.jpg", 1))
    blurred = good.filter(ImageFilter.GaussianBlur(6))
    dark = Image.eval(good, lambda v: v // 8)
    cues = {
        name: prior.measure_cues(img) for name, img in [("good", good), ("blur", blurred), ("dark", dark)]
    }
    assert cues["blur"]["sharpness"] < cues["good"]["sharpness"] / 10
    values = {k: prior.cue_values(c, 800 * 600) for k, c in cues.items()}
    assert values["good"] == {"blur": 0.0, "exposure": 0.0, "tiny": 0.0}
    assert values["blur"]["blur"] > 0.9 and values["blur"]["exposure"] == 0.0
    assert values["dark"]["exposure"] == 1.0
    assert prior.cue_values(None, 120 * 90)["tiny"] == 1.0
    assert np.isnan(prior.cue_values(None, None)["blur"])


def test_scan_with_no_labels_orders_by_the_prior(model_env, tmp_path):
    """A new owner scans and gets an order at once: blurred, dark and tiny photos first."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        _detailed(root / f"good{i}.jpg", i)
    Image.open(_detailed(tmp_path / "src.jpg", 9)).filter(ImageFilter.GaussianBlur(6)).save(
        root / "blurred.jpg"
    )
    Image.eval(Image.open(_detailed(tmp_path / "src2.jpg", 10)), lambda v: v // 10).save(root / "dark.jpg")
    photo(root / "tiny.png", seed=3, size=(100, 80))
    before = {p.name for p in root.iterdir()}

    scan = json.loads(invoke("scan", str(root), "--json").output)
    assert scan["scored"] == 7
    db = open_db()
    assert score_source(db) == "prior"
    top = invoke("top", "-n", "7", "--json")
    rows = json.loads(top.stdout)
    assert "cold-start prior" in top.stderr
    first3 = {r["path"].rsplit("/", 1)[1] for r in rows[:3]}
    assert first3 == {"blurred.jpg", "dark.jpg", "tiny.png"}, rows
    status = invoke("status", "--json")
    assert json.loads(status.output)["order_source"] == "prior"
    # Thumbnails came from the same decode, under the imgrank home, never beside the photos.
    assert {p.name for p in root.iterdir()} == before
    assert len(list((config.home_dir() / "thumbs").rglob("*.jpg"))) == 7
    order = invoke("order", "--json")
    assert json.loads(order.output)["ordered"] == 7


def test_prompt_weights_in_the_home_file_move_the_prior(model_env, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(5):
        _detailed(root / f"p{i}.jpg", i)
    invoke("scan", str(root))
    db = open_db()
    model_id = current_model_id(db)
    text = prior.prompts_path().read_text()
    (config.home_dir() / "prompts.txt").write_text(text.replace("delete 1.0", "delete 1000"))
    heavy = prior.compute(db, model_id).p_prompts
    (config.home_dir() / "prompts.txt").write_text(text.replace("keep 1.0", "keep 1000"))
    light = prior.compute(db, model_id).p_prompts
    assert heavy.min() > 0.99 and light.max() < 0.01
    why = prior.explain(db, model_id, [prior.compute(db, model_id).sha256[0]])
    (entry,) = why.values()
    assert len(entry["prompts"]) == 3 and entry["prompts"][0]["kind"] == "keep"
    assert set(entry["cues"]) == {"blur", "exposure", "tiny"}


def test_new_photos_are_scored_by_the_prior_as_they_arrive(model_env, tmp_path):
    from imgrank.runs import score_unscored

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        _detailed(root / f"a{i}.jpg", i)
    invoke("scan", str(root))
    db = open_db()
    _detailed(root / "new.jpg", 42)
    invoke("scan")  # scores only what is new
    assert db.execute("SELECT count(*) FROM scores WHERE run_id IS NULL").fetchone()[0] == 4
    assert score_unscored(db) == 0
    assert json.loads(invoke("score", "--json").output) == {"scored": 4}
