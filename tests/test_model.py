"""Heads: file format, numpy scoring without torch, activation, compatibility checks, export/import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from test_train import separable, store

from imgrank.cli import cli
from imgrank.db import open_db
from imgrank.errors import ModelError
from imgrank.labels import set_label
from imgrank.model import load_head, save_head
from imgrank.train import TrainConfig, predict, train, train_arrays


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_saved_head_scores_like_the_trained_weights(tmp_path):
    x, y = separable(200)
    result = train_arrays(x, y, x, TrainConfig(max_epochs=20))
    meta = {"feature_spec": {"embed_model": "m", "image_dim": 16, "name_dim": 0, "meta": []}, "n_layers": 2}
    path = save_head(result.weights, meta, tmp_path / "h.safetensors")
    head = load_head(path)
    assert np.allclose(head.predict(x), predict(result.weights, x), atol=1e-6)
    assert json.loads((tmp_path / "h.json").read_text())["format"] == "imgrank-head/1"
    assert not any(p.suffix in (".pt", ".pkl") for p in tmp_path.iterdir())


def test_a_file_that_is_not_a_head_is_refused(tmp_path):
    bad = tmp_path / "h.safetensors"
    bad.write_bytes(b"not a head")
    with pytest.raises(ModelError, match="not a safetensors head"):
        load_head(bad)


def test_scoring_never_imports_torch(home):
    db = open_db()
    x, y = separable(120, seed=1)
    store(db, x, y)
    train(db, TrainConfig(max_epochs=5))
    code = (
        "import sys; from imgrank.db import open_db; from imgrank.model import score_all; "
        "n = score_all(open_db()); assert 'torch' not in sys.modules, 'torch imported'; print(n)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "IMGRANK_HOME": str(home)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "120"


def test_top_lists_present_photos_by_score_with_labels_marked():
    db = open_db()
    x, y = separable(150, seed=2)
    shas = store(db, x, y)
    set_label(db, shas[0], None, "user")  # one unlabelled photo
    db.execute("UPDATE files SET state = 'missing' WHERE sha256 = ?", [shas[1]])
    assert invoke("train").exit_code == 0
    rows = json.loads(invoke("top", "-n", "200", "--json").output)
    assert len(rows) == 149  # the missing file is not listed
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert {r["label"] for r in rows} == {"keep", "delete", None}
    assert rows[0]["label"] == "delete"
    text = invoke("top", "-n", "3").output
    assert "[delete]" in text and "/photos/img" in text


def test_a_clearly_worse_head_is_not_activated_unless_forced():
    db = open_db()
    x, y = separable(300, seed=3)
    shas = store(db, x, y)
    assert invoke("train").exit_code == 0
    # scramble the labels: the next head is clearly worse
    rng = np.random.default_rng(0)
    for sha, label in zip(shas, rng.permutation(y), strict=True):
        set_label(db, sha, "delete" if label else "keep", "user")
    result = invoke("train")
    assert result.exit_code == 0
    assert "run 2 NOT activated" in result.output
    assert [r["active"] for r in json.loads(invoke("model", "list", "--json").output)] == [False, True]
    assert "run 3 is now the active head" in invoke("train", "--force").output
    assert invoke("model", "use", "1").exit_code == 0
    runs = {r["id"]: r["active"] for r in json.loads(invoke("model", "list", "--json").output)}
    assert runs == {1: True, 2: False, 3: False}


def test_a_head_from_another_embedding_model_is_refused(tiny_model, tmp_path, monkeypatch):
    from imgrank.testing.tinymodel import build_model

    other = build_model(tmp_path / "other-model", seed=1)
    monkeypatch.setenv("IMGRANK_MODEL", str(tiny_model))
    db = open_db()
    x, y = separable(100, seed=4)
    from imgrank.model import current_model_id

    store(db, x, y, model=current_model_id())
    assert invoke("train").exit_code == 0
    head = json.loads(invoke("model", "list", "--json").output)[0]["head_path"]

    monkeypatch.setenv("IMGRANK_MODEL", str(other))
    store_b = current_model_id()
    db.execute("UPDATE vectors SET model = ?", [store_b])
    for args in (["score"], ["model", "use", "1"], ["model", "import", head]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        assert "trained on embedding model" in result.output and store_b in result.output
        assert "Traceback" not in result.output


def test_export_then_train_elsewhere_then_import(tmp_path, monkeypatch, home):
    db = open_db()
    x, y = separable(200, seed=6)
    store(db, x, y)
    data = tmp_path / "labels.parquet"
    assert invoke("export", str(data)).exit_code == 0
    # "elsewhere": another home with no database at all
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "gpu-box"))
    head = tmp_path / "head.safetensors"
    result = invoke("train", "--data", str(data), "--out", str(head), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "average precision" in result.output and head.exists()
    assert not (tmp_path / "gpu-box" / "imgrank.db").exists()
    monkeypatch.setenv("IMGRANK_HOME", str(home))
    result = invoke("model", "import", str(head))
    assert result.exit_code == 0, result.output
    assert "200 photos scored" in result.output
    assert json.loads(invoke("model", "list", "--json").output)[0]["active"]
