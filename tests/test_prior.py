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
from imgrank.errors import ImgrankError
from imgrank.head_inputs import compute_prior, explain_prior
from imgrank.learn.head_math import with_contrast
from imgrank.learn.recipe import HELPS_BY
from imgrank.store.db import open_db
from imgrank.store.scores import all_scores, score_source
from imgrank.store.vectors import current_model_id


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
    from imgrank.thumbs import SMALL_PHOTO  # a photo smaller than that is its own thumbnail

    big = sum(p.stat().st_size >= SMALL_PHOTO for p in root.iterdir())
    assert len(list((config.home_dir() / "thumbs").rglob("*.jpg"))) == big
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
    heavy = compute_prior(db, model_id).p_prompts
    (config.home_dir() / "prompts.txt").write_text(text.replace("keep 1.0", "keep 1000"))
    light = compute_prior(db, model_id).p_prompts
    assert heavy.min() > 0.99 and light.max() < 0.01
    why = explain_prior(db, model_id, [compute_prior(db, model_id).sha256[0]])
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


# --- the prior's features offered to a head ---------------------------------------------------------


def _twins(root, n: int, seed: int = 0) -> list:
    """n pairs of 800×600 photos, each a sharp shot and the same shot slightly soft (the one deleted).
    Which of a pair is `a` and which `b` is random, and every file is padded to one size, so neither the
    name nor the byte count tells them apart: only the sharpness measured while decoding does (after
    the model's resize to 224 pixels the two look nearly the same)."""
    root.mkdir()
    rng = np.random.default_rng(seed)
    soft = []
    for i in range(n):
        sharp = Image.open(_detailed(root / f"p{i:02d}a.jpg", 100 + i))
        blurred = sharp.filter(ImageFilter.GaussianBlur(1))
        if rng.random() < 0.5:
            blurred.save(root / f"p{i:02d}b.jpg", quality=92)
            soft.append(root / f"p{i:02d}b.jpg")
        else:
            sharp.save(root / f"p{i:02d}b.jpg", quality=92)
            blurred.save(root / f"p{i:02d}a.jpg", quality=92)
            soft.append(root / f"p{i:02d}a.jpg")
    big = max(p.stat().st_size for p in root.iterdir())
    for p in root.iterdir():
        with open(p, "ab") as f:  # after the JPEG's end: decoders ignore it
            f.write(b"\0" * (big - p.stat().st_size))
    return soft


def _label_all(root, deletes) -> None:
    keeps = [p for p in sorted(root.iterdir()) if p not in deletes]
    invoke("relabel", "delete", *map(str, deletes))
    invoke("relabel", "keep", *map(str, keeps))


@pytest.mark.slow
def test_train_takes_the_prior_features_where_the_cues_carry_the_signal(model_env, tmp_path):
    import torch

    from imgrank.head_inputs import head_input
    from imgrank.learn.mlp import build_net
    from imgrank.runs import active_head
    from imgrank.train import TrainConfig

    root = tmp_path / "photos"
    soft = _twins(root, 24)
    invoke("scan", str(root))
    _label_all(root, soft)
    out = invoke("train").output
    line = next(s for s in out.splitlines() if s.startswith("the prior's features"))
    assert line.startswith("the prior's features helped: held-out AP "), line
    db = open_db()
    head = active_head(db)
    pf = head.meta["metrics"]["prior_features"]
    assert pf["used"] and pf["ap_with"] >= 0.95 and pf["ap_with"] > pf["ap_without"] + 0.2, pf
    assert head.spec["prior"]["features"] == list(prior.HEAD_FEATURES)
    assert head.spec["prior"]["prompts"] == prior.prompts_record(prior.load_prompts())
    assert json.loads(invoke("model", "list", "--json").output)[0]["prior_features"] is True
    assert "  yes  " in invoke("model", "list").output.splitlines()[1]
    # The order a user sees: every soft twin before every sharp one.
    rows = json.loads(invoke("top", "-n", "48", "--json").stdout)
    assert {r["path"] for r in rows[:24]} == {str(p) for p in soft}

    # The numpy scorer on the head's input (prior features included) is the torch network.
    shas, x = head_input(db, head.spec)
    assert not np.isnan(x[:, -4:]).any()
    # the head's first step, where it holds centroids: how each photo differs from the nearest
    z = with_contrast(x, head.weights["centroids"]) if "centroids" in head.weights else x
    assert z.shape[1] == head.weights["mean"].shape[0]
    hidden = tuple(len(head.weights[f"b{i}"]) for i in range(head.meta["n_layers"] - 1))
    net = build_net(z.shape[1], TrainConfig(hidden=hidden, dropout=0.0))
    with torch.no_grad():
        for i, layer in enumerate(m for m in net if isinstance(m, torch.nn.Linear)):
            layer.weight.copy_(torch.from_numpy(head.weights[f"w{i}"]))
            layer.bias.copy_(torch.from_numpy(head.weights[f"b{i}"]))
        z = (torch.from_numpy(z) - torch.from_numpy(head.weights["mean"])) / torch.from_numpy(
            head.weights["std"]
        )
        expected = net.eval()(z).squeeze(1).numpy()
    assert np.allclose(head.logit(x), expected, atol=1e-4)
    stored = all_scores(db)
    assert np.allclose([stored[s] for s in shas], head.predict(x), atol=1e-6)

    # A changed prompts file changes the cold-start prior, not the head: it keeps the prompts it learnt with.
    text = prior.prompts_path().read_text()
    (config.home_dir() / "prompts.txt").write_text(text.replace("cue blur 0.5", "cue blur 0.0"))
    invoke("score")
    assert np.allclose([all_scores(db)[s] for s in shas], [stored[s] for s in shas], atol=1e-6)

    # A new photo is scored as it arrives (the daemon's path: score_unscored), with the same features.
    Image.open(_detailed(tmp_path / "new.jpg", 999)).filter(ImageFilter.GaussianBlur(1)).save(
        root / "new.jpg"
    )
    assert json.loads(invoke("scan", "--json").output)["scored"] == 1
    (new,), x_new = head_input(db, head.spec, sorted(set(all_scores(db)) - set(shas)))
    assert all_scores(db)[new] == pytest.approx(float(head.predict(x_new)[0]), abs=1e-6)
    assert all_scores(db)[new] > np.median([stored[s] for s in shas])  # a soft one: among the deletes


@pytest.mark.slow
def test_where_the_prior_carries_no_signal_train_reports_it_honestly(model_env, tmp_path):
    from imgrank.runs import active_head

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(28):
        _detailed(root / f"p{i:02d}.jpg", 200 + i, size=(400, 300))
    invoke("scan", str(root))
    rng = np.random.default_rng(5)
    deletes = [p for p in sorted(root.iterdir()) if rng.random() < 0.5]
    _label_all(root, deletes)
    out = invoke("train", "--json").output
    pf = json.loads(out)["metrics"]["prior_features"]
    assert pf["tried"] and pf["used"] == (pf["ap_with"] >= pf["ap_without"] + HELPS_BY)
    text = invoke("train", "--force").output  # same data, same seed: the same comparison, in words
    verdict = "helped" if pf["used"] else "did not help"
    assert (
        f"the prior's features {verdict}: held-out AP {pf['ap_with']:.3f} with, {pf['ap_without']:.3f}"
        in text
    )
    head = active_head(open_db())
    assert ("prior" in head.spec) == pf["used"]
    assert json.loads(invoke("score", "--json").output) == {"scored": 28}


@pytest.mark.slow
def test_the_prior_features_go_through_export_train_elsewhere_and_import(
    model_env, tmp_path, monkeypatch, home
):
    import pyarrow.parquet as pq

    from imgrank.head_inputs import labelled_set
    from imgrank.runs import active_head

    root = tmp_path / "photos"
    soft = _twins(root, 16, seed=1)
    invoke("scan", str(root))
    _label_all(root, soft)
    data = tmp_path / "labels.parquet"
    invoke("export", str(data))
    local = labelled_set(open_db())
    table = pq.read_table(data)
    exported = np.stack([table.column(f).to_numpy() for f in prior.HEAD_FEATURES], axis=1)
    labelled = np.array([v is not None for v in table.column("label").to_pylist()])
    assert np.allclose(exported[labelled], local.prior, equal_nan=True)
    assert (~labelled).sum() == 32 and np.isnan(exported[~labelled]).all()  # the library sample: no label
    # elsewhere: another home, no database, no prompts file of ours, no embedding model
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "gpu-box"))
    monkeypatch.setenv("IMGRANK_MODEL", str(tmp_path / "no-model-here"))
    head_file = tmp_path / "head.safetensors"
    out = invoke("train", "--data", str(data), "--out", str(head_file), "--device", "cpu").output
    assert "the prior's features helped" in out
    monkeypatch.setenv("IMGRANK_HOME", str(home))
    monkeypatch.setenv("IMGRANK_MODEL", str(model_env))
    assert "32 photos scored" in invoke("model", "import", str(head_file)).output
    head = active_head(open_db())
    assert head.spec["prior"] == local.prior_spec
    rows = json.loads(invoke("top", "-n", "32", "--json").stdout)
    assert {r["path"] for r in rows[:16]} == {str(p) for p in soft}


def test_vectors_embedded_elsewhere_bring_their_cues(model_env, tmp_path, monkeypatch, home):
    from imgrank.store.vectors import current_model_id

    root = tmp_path / "backlog"
    root.mkdir()
    _detailed(root / "sharp.jpg", 1)
    Image.open(_detailed(tmp_path / "src.jpg", 2)).filter(ImageFilter.GaussianBlur(6)).save(root / "soft.jpg")
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "gpu-box"))
    invoke("scan", str(root))
    db = open_db()
    there = compute_prior(db, current_model_id(db))
    invoke("export-vectors", str(tmp_path / "vectors.parquet"))
    monkeypatch.setenv("IMGRANK_HOME", str(home))
    out = json.loads(invoke("import-vectors", str(tmp_path / "vectors.parquet"), "--json").output)
    assert out["imported"] == 2 and out["cues"] == 2
    assert json.loads(invoke("scan", str(root), "--json").output)["embedded"] == 0  # nothing decoded here
    db = open_db()
    here = compute_prior(db, current_model_id(db))
    assert sorted(here.sha256) == sorted(there.sha256)
    measured_there = dict(zip(there.sha256, there.measured.tolist(), strict=True))
    assert dict(zip(here.sha256, here.measured.tolist(), strict=True)) == measured_there
    assert not np.isnan(here.measured).any()
