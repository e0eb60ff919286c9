"""Heads: file format, numpy scoring against torch, bad heads refused, activation, import, `top`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import run_python, separable, store

from imgrank import prior, runs
from imgrank.cli import cli
from imgrank.errors import ModelError
from imgrank.learn.head_math import Head, standardise
from imgrank.learn.mlp import build_net, fit_mlp, net_weights
from imgrank.model import feature_spec, load_head, save_head
from imgrank.store.db import open_db
from imgrank.store.labels import set_label
from imgrank.store.scores import active_run, all_scores, has_scores, score_source
from imgrank.train import TrainConfig, train

SPEC = {"embed_model": "m", "image_dim": 16, "name_dim": 0, "meta": []}
PRIOR = prior.spec_record(prior.parse_prompts("delete 1 a blurry photo\nkeep 1 a dog\ncue blur 0.5\n"))


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def one_line_error(result, code: int = 1) -> str:
    """The command failed the way a user should see it: one line, the exit code, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    if code == 1:  # our own errors are the one line; usage errors (2) come with click's usage line
        assert len(result.output.strip().splitlines()) == 1, result.output
    return errors[0]


def test_numpy_scoring_matches_the_torch_network():
    import torch

    x, y = separable(200)
    config = TrainConfig(hidden=(32, 8))
    weights, _ = fit_mlp(x, y, config, epochs=5)
    torch.manual_seed(1)
    net = build_net(x.shape[1], config)
    mean, std = weights["mean"], weights["std"]
    weights = net_weights(net, mean, std)  # a network with weights of its own, read back out
    net.eval()
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(standardise(x, mean, std))).squeeze(1)).numpy()
    head = Head(weights, {"n_layers": 3})
    assert np.allclose(head.predict(x), expected, atol=1e-5)


def test_a_saved_head_scores_as_it_did_before_saving(tmp_path):
    x, y = separable(200)
    weights, _ = fit_mlp(x, y, TrainConfig(), epochs=5)
    meta = {"feature_spec": SPEC, "n_layers": 2, "calibration": {"method": "platt", "a": 0.5, "b": -1.0}}
    path = save_head(weights, meta, tmp_path / "h.safetensors")
    head = load_head(path)
    logit = Head(weights, {"n_layers": 2}).logit(x)
    assert np.allclose(head.predict(x), 1 / (1 + np.exp(-(0.5 * logit - 1.0))), atol=1e-6)
    assert json.loads((tmp_path / "h.json").read_text())["format"] == "imgrank-head/1"
    assert not any(p.suffix in (".pt", ".pkl") for p in tmp_path.iterdir())


def test_a_file_that_is_not_a_head_is_refused(tmp_path):
    bad = tmp_path / "h.safetensors"
    bad.write_bytes(b"not a head")
    with pytest.raises(ModelError, match="not a safetensors head"):
        load_head(bad)


def good_head() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    weights = {
        "mean": np.zeros(16),
        "std": np.ones(16),
        "w0": rng.normal(size=(4, 16)),
        "b0": np.zeros(4),
        "w1": rng.normal(size=(1, 4)),
        "b1": np.zeros(1),
    }
    return weights, {"format": "imgrank-head/1", "feature_spec": dict(SPEC), "n_layers": 2}


def contrast_head() -> tuple[dict, dict]:
    """A good head that holds 3 centroids: its first layer takes the 16 features, then how the photo
    differs from the nearest centroid (16 more)."""
    rng = np.random.default_rng(1)
    weights, meta = good_head()
    weights |= {"mean": np.zeros(32), "std": np.ones(32), "w0": rng.normal(size=(4, 32))}
    weights["centroids"] = rng.normal(size=(3, 16))
    return weights, {**meta, "contrast": 3}


def crafted(tmp_path, weights: dict, meta) -> str:
    """A safetensors file with exactly this metadata string (or object) under "imgrank"."""
    from safetensors.numpy import save_file

    path = tmp_path / "crafted.safetensors"
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(
        {k: np.asarray(v, np.float32) for k, v in weights.items()}, str(path), metadata={"imgrank": raw}
    )
    return str(path)


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


BAD_HEADS = {
    "metadata is not JSON": (lambda w, m: (w, "{not json"), "not JSON"),
    "metadata is a list": (lambda w, m: (w, [1, 2]), "not a JSON object"),
    "wrong format string": (lambda w, m: (w, {**m, "format": "other/9"}), "format is 'other/9'"),
    "no feature_spec": (lambda w, m: (w, _without(m, "feature_spec")), "feature_spec is missing"),
    "image_dim a string": (
        lambda w, m: (w, {**m, "feature_spec": {**SPEC, "image_dim": "16"}}),
        "feature_spec.image_dim",
    ),
    "unknown meta feature": (
        lambda w, m: (w, {**m, "feature_spec": {**SPEC, "meta": ["exif_iso"]}}),
        "feature_spec.meta",
    ),
    "no n_layers": (lambda w, m: (w, _without(m, "n_layers")), "n_layers is missing"),
    "n_layers a float": (lambda w, m: (w, {**m, "n_layers": 2.0}), "n_layers is missing"),
    "fewer layers than weights": (lambda w, m: (w, {**m, "n_layers": 1}), "holds 2 layers"),
    "more layers than weights": (lambda w, m: (w, {**m, "n_layers": 3}), "holds 2 layers"),
    "NaN weights": (lambda w, m: ({**w, "w1": np.full((1, 4), np.nan)}, m), "NaN or infinite"),
    "inf weights": (lambda w, m: ({**w, "b0": np.full(4, np.inf)}, m), "NaN or infinite"),
    "first layer too narrow": (lambda w, m: ({**w, "w0": np.ones((4, 15))}, m), "layer 0 has shape"),
    "layers do not chain": (lambda w, m: ({**w, "w1": np.ones((1, 5))}, m), "layer 1 has shape"),
    "two outputs": (lambda w, m: ({**w, "w1": np.ones((2, 4)), "b1": np.ones(2)}, m), "layer 1 has shape"),
    "mean of the wrong width": (lambda w, m: ({**w, "mean": np.zeros(12)}, m), "mean/std"),
    "zero std": (lambda w, m: ({**w, "std": np.zeros(16)}, m), "std has values <= 0"),
    "bad calibration": (lambda w, m: (w, {**m, "calibration": {"a": "x", "b": 0}}), "calibration"),
    "centroids its metadata does not name": (
        lambda w, m: ({**contrast_head()[0]}, m),
        "says contrast 0, but it holds centroids",
    ),
    "contrast without centroids": (
        lambda w, m: (_without(contrast_head()[0], "centroids"), contrast_head()[1]),
        "says contrast 3, but it holds no centroids",
    ),
    "centroids of the wrong width": (
        lambda w, m: ({**contrast_head()[0], "centroids": np.ones((3, 8))}, contrast_head()[1]),
        "centroids have shape (3, 8), expected (3, 16)",
    ),
    "contrast head without room for it": (
        lambda w, m: ({**w, "centroids": np.ones((3, 16))}, {**m, "contrast": 3}),
        "mean/std do not have the 32 features",
    ),
    "unknown prior feature": (
        lambda w, m: (w, {**m, "feature_spec": {**SPEC, "prior": {**PRIOR, "features": ["exif_iso"]}}}),
        "feature_spec.prior.features",
    ),
    "prior without its prompts": (
        lambda w, m: (w, {**m, "feature_spec": {**SPEC, "prior": {**PRIOR, "prompts": {"texts": []}}}}),
        "feature_spec.prior.prompts",
    ),
    "prior prompts and weights disagree": (
        lambda w, m: (
            w,
            {
                **m,
                "feature_spec": {**SPEC, "prior": {**PRIOR, "prompts": {**PRIOR["prompts"], "weights": [1]}}},
            },
        ),
        "feature_spec.prior.prompts",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADS))
def test_a_bad_head_is_refused_at_import_before_anything_is_activated(case, tmp_path):
    db = open_db()
    x, y = separable(40)
    store(db, x, y, model="m")
    make, message = BAD_HEADS[case]
    path = crafted(tmp_path, *make(*good_head()))
    with pytest.raises(ModelError, match="not a usable imgrank head|not an imgrank head"):
        load_head(path)
    out = one_line_error(invoke("model", "import", path))
    assert message in out
    assert runs.list_runs(db) == [] and not has_scores(db)


def test_the_good_head_those_are_made_from_is_accepted(tmp_path):
    db = open_db()
    x, y = separable(40)
    store(db, x, y, model="m")
    result = invoke("model", "import", crafted(tmp_path, *good_head()))
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "imported as run 1, now active; 40 photos scored" in result.output


def test_a_head_holding_centroids_scores_each_photo_by_how_it_differs_from_the_nearest(tmp_path):
    """The contrast block, computed by scoring, is the photo less the centre scikit-learn's KMeans
    assigns it to; the stored scores are that network's, not the one on the 16 features alone."""
    from sklearn.cluster import KMeans

    db = open_db()
    x, y = separable(40, dim=16)
    shas = store(db, x, y, model="m")
    weights, meta = contrast_head()
    result = invoke("model", "import", crafted(tmp_path, weights, meta))
    assert result.exit_code == 0 and result.exception is None, result.output
    km = KMeans(3).fit(weights["centroids"])  # a KMeans whose centres are the head's own
    km.cluster_centers_ = weights["centroids"].astype(np.float64)
    f = np.hstack([x, x - km.cluster_centers_[km.predict(x.astype(np.float64))]])
    h = np.maximum(f @ weights["w0"].T + weights["b0"], 0) @ weights["w1"].T + weights["b1"]
    expected = 1 / (1 + np.exp(-h[:, 0]))
    scores = all_scores(db)
    assert np.allclose([scores[sha] for sha in shas], expected, atol=1e-5)
    alone = 1 / (1 + np.exp(-(np.maximum(f[:, :16] @ weights["w0"][:, :16].T, 0) @ weights["w1"].T)[:, 0]))
    assert not np.allclose(expected, alone, atol=1e-3)


def test_importing_the_same_head_twice_adds_no_second_run(tmp_path):
    db = open_db()
    x, y = separable(40)
    store(db, x, y, model="m")
    path = crafted(tmp_path, *good_head())
    assert invoke("model", "import", path).exit_code == 0
    again = invoke("model", "import", path)
    assert again.exit_code == 0 and "already run 1" in again.output
    assert [r["id"] for r in runs.list_runs(db)] == [1]


def test_a_head_below_chance_is_not_activated_and_scores_nothing(tmp_path):
    db = open_db()
    x, y = separable(40)
    store(db, x, y, model="m")
    weights, meta = good_head()
    meta["metrics"] = {"active": {"roc_auc": 0.31, "ap": 0.2}, "baseline": {"roc_auc": 0.3, "ap": 0.2}}
    result = invoke("model", "import", crafted(tmp_path, weights, meta))
    assert result.exit_code == 0 and result.exception is None
    assert "run 1 NOT activated: its held-out ROC AUC 0.310 is below chance" in result.output
    assert "scored" not in result.output
    assert active_run(db) is None and not has_scores(db)


def test_model_use_with_an_absurd_id_is_one_clear_line():
    for arg in ("1e23", "99999999999999999999999", "0"):
        out = one_line_error(invoke("model", "use", arg), code=2)  # usage errors: click's own line
        assert "RUN_ID" in out or "run_id" in out.lower()
    assert "no run 7" in one_line_error(invoke("model", "use", "7"))


def test_scoring_never_imports_torch_or_scikit_learn(home):
    db = open_db()
    x, y = separable(120, seed=1)
    store(db, x, y)
    train(db, TrainConfig(max_epochs=5))
    code = (
        "import sys; from imgrank.store.db import open_db; from imgrank.runs import score_all; "
        "n = score_all(open_db()); assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'sklearn' not in sys.modules, 'scikit-learn imported'; print(n)"
    )
    out = run_python(code, home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "120"


def test_top_lists_present_photos_by_score_with_labels_marked():
    db = open_db()
    x, y = separable(150, seed=2)
    shas = store(db, x, y)
    for sha in shas[:5]:
        set_label(db, sha, None, "user")  # five unlabelled photos
    db.execute("UPDATE files SET state = 'missing' WHERE sha256 = ?", [shas[5]])
    result = invoke("train", "--epochs", "30")
    assert result.exit_code == 0 and result.exception is None, result.output
    rows = json.loads(invoke("top", "-n", "200", "--json").output)
    assert len(rows) == 149  # the missing file is not listed
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert {r["label"] for r in rows} == {"keep", "delete", None}
    assert rows[0]["label"] == "delete"
    text = invoke("top", "-n", "3").output
    assert "[delete]" in text and "/photos/img" in text
    unlabelled = json.loads(invoke("top", "-n", "200", "--unlabelled", "--json").output)
    assert sorted(r["path"] for r in unlabelled) == [f"/photos/img{i:05d}.jpg" for i in range(5)]
    assert len(json.loads(invoke("top", "-n", "2", "--unlabelled", "--json").output)) == 2


def test_top_and_suspects_refuse_a_count_below_one():
    for args in (["top", "-n", "0"], ["top", "-n", "-3"], ["suspects", "-n", "0"]):
        out = one_line_error(invoke(*args), code=2)
        assert "no scores" not in out and "-n" in out


def test_a_clearly_worse_head_is_not_activated_and_does_not_rescore():
    db = open_db()
    x, y = separable(300, seed=3)
    shas = store(db, x, y)
    assert invoke("train", "--epochs", "30").exit_code == 0
    before = all_scores(db)
    # scramble the labels: the next head is clearly worse
    rng = np.random.default_rng(0)
    for sha, label in zip(shas, rng.permutation(y), strict=True):
        set_label(db, sha, "delete" if label else "keep", "user")
    result = invoke("train", "--epochs", "30")
    assert result.exit_code == 0 and result.exception is None
    assert "run 2 NOT activated: its held-out" in result.output
    assert [r["active"] for r in runs.list_runs(db)] == [False, True]
    assert all_scores(db) == before  # run 2 scored nothing
    assert "run 3 is now the active head" in invoke("train", "--force", "--epochs", "30").output
    assert all_scores(db) != before
    assert invoke("model", "use", "1").exit_code == 0
    assert {r["id"]: r["active"] for r in runs.list_runs(db)} == {1: True, 2: False, 3: False}
    assert all_scores(db) == pytest.approx(before)


def test_a_head_from_another_embedding_model_is_refused(tmp_path):
    db = open_db()
    x, y = separable(100, seed=4)
    store(db, x, y, model="model-a")
    assert invoke("train", "--epochs", "20").exit_code == 0
    head = runs.list_runs(db)[0]["head_path"]
    db.execute("UPDATE vectors SET model = 'model-b'")
    db.execute("UPDATE settings SET value = 'model-b' WHERE key = 'embed_model'")
    for args in (["score"], ["model", "use", "1"], ["model", "import", head]):
        out = one_line_error(invoke(*args))
        assert "trained on embedding model" in out and "model-b" in out


def test_export_then_train_elsewhere_then_import(tmp_path, monkeypatch, home):
    from imgrank.export import read_parquet

    db = open_db()
    x, y = separable(200, seed=6)
    store(db, x, y)
    store(db, separable(300, seed=7)[0])  # photos nobody labelled: they shape the head's prior too
    data = tmp_path / "labels.parquet"
    assert invoke("export", str(data)).exit_code == 0
    exported = read_parquet(data)
    assert len(exported["y"]) == 200 and len(exported["library"]["sha256"]) == 500  # the whole sample
    # "elsewhere": another home with no database at all
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "gpu-box"))
    head = tmp_path / "head.safetensors"
    result = invoke("train", "--data", str(data), "--out", str(head), "--device", "cpu", "--epochs", "30")
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "average precision" in result.output and head.exists()
    assert not (tmp_path / "gpu-box" / "imgrank.db").exists()
    # ...nor the database layer: sqlite-utils imports pandas where it is installed (0.6 s of a GPU
    # machine's start-up). A fresh process shows what `train --data` imports.
    code = (
        "import sys; from imgrank.cli import cli; "
        f"cli(['-q', 'train', '--data', {str(data)!r}, '--out', {str(tmp_path / 'h2.safetensors')!r}, "
        "'--epochs', '2'], standalone_mode=False); "
        "print('sqlite_utils' in sys.modules, 'imgrank.store.db' in sys.modules)"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split()[-2:] == ["False", "False"], fresh.stdout
    monkeypatch.setenv("IMGRANK_HOME", str(home))
    result = invoke("model", "import", str(head))
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "500 photos scored" in result.output
    assert runs.list_runs(db)[0]["active"]
    elsewhere = load_head(head)
    assert elsewhere.meta["counts"]["trained_on"] == 200
    here = train(db, TrainConfig(max_epochs=30))  # what `train` makes on this machine...
    local = load_head(here["head_path"])  # ...is the same head: same labels, library sample and recipe
    assert local.meta["recipe"] == elsewhere.meta["recipe"]
    for key, value in local.weights.items():
        assert np.allclose(value, elsewhere.weights[key], atol=1e-4), key


def test_feature_spec_round_trips_through_a_head(tmp_path):
    spec = feature_spec("m", 16, 0, meta=False)
    weights, meta = good_head()
    path = save_head(weights, {**meta, "feature_spec": spec}, tmp_path / "h.safetensors")
    assert load_head(path).spec == spec


def test_a_head_taking_prior_features_is_refused_where_its_prompts_cannot_be_embedded(tmp_path):
    """Store model "m" has no text encoder here: such a head could never score, so it is not recorded."""
    db = open_db()
    x, y = separable(40)
    store(db, x, y, model="m")
    weights, meta = good_head()
    width = 16 + len(prior.HEAD_FEATURES)
    weights = {**weights, "mean": np.zeros(width), "std": np.ones(width), "w0": np.ones((4, width))}
    meta["feature_spec"] = {**SPEC, "prior": PRIOR}
    out = one_line_error(invoke("model", "import", crafted(tmp_path, weights, meta)))
    assert "head takes the prior's features, but its prompts cannot be embedded" in out
    assert runs.list_runs(db) == [] and not has_scores(db)


def test_a_head_from_before_the_prior_features_scores_a_store_that_has_them(model_env, tmp_path):
    from helpers import activate_random_head
    from images import photo

    from imgrank.head_inputs import load_parts
    from imgrank.model import assemble
    from imgrank.store.vectors import current_model_id

    for i in range(6):
        photo(tmp_path / "photos" / f"p{i}.jpg", seed=i)
    assert invoke("scan", str(tmp_path / "photos")).exit_code == 0  # cues measured, the prior scores
    activate_random_head()  # its feature_spec has no "prior": every head made before them
    db = open_db()
    head = runs.active_head(db)
    assert "prior" not in head.spec and head.weights["mean"].shape == (64 + 64 + 3,)
    parts = load_parts(db, current_model_id(db))
    expected = head.predict(assemble(head.spec, parts["image"], parts["name"], parts["meta"]))
    stored = all_scores(db)
    assert score_source(db) == "head"
    assert np.allclose([stored[s] for s in parts["sha256"]], expected, atol=1e-6)


def test_platt_fit_finds_the_minimum_when_logits_are_large():
    """Held-out logits spread over +-9 with a weak relation to the labels (AUC about 0.7, as a
    logistic regression on 100 labels gives): a plain Newton step from a = 1 ran off to a = 7e7,
    making every calibrated score 0 or 1. The fit must land on the loss's minimum, checked
    against a brute-force search of (a, b)."""
    from imgrank.learn.head_math import calibrated
    from imgrank.learn.logistic import fit_platt

    rng = np.random.default_rng(0)
    y = (rng.random(120) < 0.2).astype(int)
    z = rng.normal(0, 4, 120) + 2.5 * y - 3
    cal = fit_platt(z, y)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a, b):
        s = a * z + b
        return np.sum(np.logaddexp(0, s) - t * s)

    grid = min(loss(a, b) for a in np.linspace(0.01, 2, 200) for b in np.linspace(-4, 2, 200))
    assert loss(cal["a"], cal["b"]) <= grid + 1e-6
    assert 0.05 < cal["a"] < 1.0
    p = calibrated(z, cal)
    assert 0.01 < p.min() and p.max() < 0.99  # scores that still rank, not 0 or 1
