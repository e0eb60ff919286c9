"""Training: metrics, near-duplicate groups and folds, the chosen recipe refit on every label,
calibration, a learnable task, an alike-family of deletes, and finding wrong labels."""

from __future__ import annotations

import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import separable, store, unit
from PIL import Image

from imgrank import runs
from imgrank.cli import cli
from imgrank.errors import ImgrankError
from imgrank.head_inputs import labelled_set
from imgrank.learn.evaluation import (
    average_precision,
    evaluate,
    near_duplicate_groups,
    roc_auc,
    stratified_group_folds,
)
from imgrank.learn.logistic import fit_logistic, predict
from imgrank.model import load_head
from imgrank.store.db import open_db
from imgrank.train import TrainConfig, train, train_arrays


def test_metrics_match_hand_computed_values():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.4, 0.4, 0.8])
    assert roc_auc(y, p) == pytest.approx(5.5 / 6)
    assert average_precision(y, p) == pytest.approx((1 + 1 + 0.75) / 3)
    m = evaluate(y, p)
    assert m["confusion"] == {"keep": {"keep": 2, "delete": 0}, "delete": {"keep": 1, "delete": 2}}
    assert m["delete"] == {"precision": 1.0, "recall": 0.6667}
    assert m["chance_ap"] == 0.6
    assert m["precision_at_10"] is None and m["precision_at_50"] is None  # 5 photos: no first 10
    ten = evaluate(np.r_[np.ones(4, int), np.zeros(8, int)], np.linspace(1, 0, 12))
    assert ten["precision_at_10"] == 0.4 and ten["precision_at_50"] is None


def line_of_points(n: int, step_cos: float, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Points on a great circle, each exactly `step_cos` from the next (a family that chains)."""
    rng = np.random.default_rng(seed)
    a, b = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
    angles = np.arange(n) * np.arccos(step_cos)
    return unit(np.cos(angles)[:, None] * a + np.sin(angles)[:, None] * b)


def test_a_line_of_alike_photos_does_not_chain_into_one_group():
    x = line_of_points(20, 0.96)
    assert np.allclose(np.sum(x[1:] * x[:-1], axis=1), 0.96, atol=1e-5)
    groups = near_duplicate_groups(x, 0.95)
    sizes = np.unique(groups, return_counts=True)[1]
    assert sizes.max() <= 2  # single linkage would make one group of 20
    assert len(sizes) >= 10


def test_every_pair_in_a_group_is_close_and_groups_are_capped():
    rng = np.random.default_rng(3)
    centre = rng.normal(size=64)
    x = unit(centre + 0.12 * rng.normal(size=(60, 64)))  # 60 very alike photos
    x = np.vstack([x, unit(rng.normal(size=(40, 64)))])
    groups = near_duplicate_groups(x, 0.95, max_size=12)
    for g in np.unique(groups):
        members = x[groups == g]
        sims = members @ members.T
        assert sims.min() > 0.95 - 1e-6
        assert len(members) <= 12


def test_bursts_never_straddle_folds_and_folds_are_stratified(monkeypatch):
    from imgrank.learn import neighbours

    rng = np.random.default_rng(1)
    shots, labels, burst_of = [], [], []
    for b in range(120):  # bursts of 1 to 6 near-identical shots; a burst shares its label
        v, size, label = rng.normal(size=64), int(rng.integers(1, 7)), int(rng.random() < 0.2)
        shots += [v + 0.02 * rng.normal(size=64) for _ in range(size)]
        labels += [label] * size
        burst_of += [b] * size
    x, y, burst_of = unit(np.array(shots)), np.array(labels), np.array(burst_of)
    monkeypatch.setattr(neighbours, "BLOCK", 37 * len(x))  # blocks of 37 rows: pairs across blocks still join
    groups = near_duplicate_groups(x, 0.95)
    for b in range(120):
        assert len(set(groups[burst_of == b])) == 1
    folds = stratified_group_folds(y, groups, 5, seed=0)
    assert (folds.fold >= 0).all() and not folds.warnings
    for b in range(120):
        assert len(set(folds.fold[burst_of == b])) == 1
    for f in range(5):
        assert abs(y[folds.fold == f].mean() - y.mean()) <= 0.05
    assert np.bincount(folds.fold).max() - np.bincount(folds.fold).min() <= 12


def test_folds_that_cannot_be_stratified_say_so():
    # 3 big groups hold every delete: 5 folds cannot each get a fifth of them
    groups = np.r_[np.zeros(8), np.ones(8), np.full(8, 2), np.arange(3, 79)]
    y = np.r_[np.ones(24, int), np.zeros(76, int)]
    folds = stratified_group_folds(y, groups, 5, seed=0)
    assert any("could not get their share of deletes" in w for w in folds.warnings)


def test_a_group_too_big_to_hold_out_stays_in_training_and_is_named():
    groups = np.r_[np.zeros(30), np.arange(1, 71)]
    y = np.r_[np.ones(30, int), (np.arange(70) % 5 == 0).astype(int)]
    folds = stratified_group_folds(y, groups, 5, seed=0)
    assert (folds.fold[:30] == -1).all() and (folds.fold[30:] >= 0).all()
    assert folds.too_big == [0]
    assert any("30 near-duplicate photos is too big to hold out" in w for w in folds.warnings)


def test_same_seed_gives_same_metrics():
    x, y = separable(200)
    a = train_arrays(x, y, x, TrainConfig(seed=3, max_epochs=30))
    b = train_arrays(x, y, x, TrainConfig(seed=3, max_epochs=30))
    assert a.metrics == b.metrics
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_the_active_head_is_refit_on_every_label():
    """Its standardisation is computed from its training rows: all of them, not a split."""
    x, y = separable(200, seed=4)
    x[:, 0] += np.linspace(-3, 3, len(x))  # rows differ, so any subset would have another mean
    result = train_arrays(x, y, x, TrainConfig(max_epochs=20))
    assert result.counts["trained_on"] == len(y)
    assert np.allclose(result.weights["mean"], x.mean(axis=0), atol=1e-5)
    assert result.counts["held_out"]["delete"] + result.counts["held_out"]["keep"] == len(y)


def test_many_labels_are_cross_validated_in_two_folds_and_few_in_five():
    x, y = separable(200, seed=4)
    assert train_arrays(x, y, x, TrainConfig(max_epochs=5)).counts["folds"] == 5
    many = train_arrays(x, y, x, TrainConfig(max_epochs=5, two_folds_from=200))
    assert many.counts["folds"] == 2 and many.counts["trained_on"] == len(y)
    assert many.counts["held_out"]["delete"] + many.counts["held_out"]["keep"] == len(y)


def test_the_mlp_is_chosen_only_when_the_folds_show_it_is_better():
    """Deletes on two opposite sides of the folder (a shape no linear model can rank): where the MLP
    is offered (here from 400 labels and 50 deletes), it beats the regression in every fold and
    becomes the head. The same labels with the MLP's advantage taken away (a linear rule) give the
    simpler regression."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (np.abs(x[:, 0]) > 1.2).astype(int)  # both tails of one axis: not linear
    offered = {"max_epochs": 60, "min_per_class": 2, "mlp_from": 400, "mlp_min_deletes": 50}
    result = train_arrays(x, y, unit(x), TrainConfig(**offered))
    assert result.recipe == "mlp", result.metrics
    assert result.metrics["mlp"]["ap"] > result.metrics["baseline"]["ap"] + 0.3
    linear = (x[:, 0] > 1.0).astype(int)
    assert train_arrays(x, linear, unit(x), TrainConfig(**offered)).recipe == "logistic"


def test_with_few_deletes_the_head_is_the_regression_and_the_mlp_is_not_tried():
    """The same non-linear folder with 150 labels, 35 of them deletes: the MLP's folds would pick it
    (it wins them by luck as often as by shape: issue 23 saw it chosen on 13 deletes and lose 0.11
    of held-out AP), so below `mlp_from` labels it is not offered and the regression is the head."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    y = (np.abs(x[:, 0]) > 1.2).astype(int)
    assert 25 <= y.sum() <= 45
    result = train_arrays(x, y, unit(x), TrainConfig(max_epochs=60, min_per_class=2))
    assert result.recipe == "logistic" and result.epochs == 0, result.metrics
    assert result.metrics["mlp"]["tried"] is False
    assert sorted(result.weights) == ["b0", "mean", "std", "w0"]


def test_when_the_baseline_ranks_better_the_active_head_is_the_logistic_regression():
    x, y = separable(120, dim=16, margin=1.0, seed=5)  # linear with a wide margin: both rank perfectly
    result = train_arrays(x, y, x, TrainConfig(max_epochs=10, hidden=(8,), mlp_from=0, mlp_min_deletes=0))
    assert result.metrics["baseline"]["ap"] >= result.metrics["mlp"]["ap"]
    assert result.recipe == "logistic" and result.epochs == 0
    l2 = result.metrics["baseline"]["l2"]  # the L2 strength cross-validation chose
    assert l2 in TrainConfig().l2_choices
    refit = fit_logistic(x, y, l2)  # on every row
    assert sorted(result.weights) == ["b0", "mean", "std", "w0"]
    assert np.allclose(predict(result.weights, x), predict(refit, x), atol=1e-6)


def test_too_few_labels_says_how_many_more_of_which_class():
    x, _ = separable(40)
    y = np.zeros(40, int)
    y[:4] = 1
    with pytest.raises(ImgrankError, match="label at least 6 more as delete"):
        train_arrays(x, y, x, TrainConfig())


def test_deletes_that_are_all_one_burst_say_so_and_distinct_ones_train():
    """Ten deletes that are shots of one burst cannot be held out apart from each other: the error
    names the group, not just "label more"; the same count of deletes from other scenes trains."""
    rng = np.random.default_rng(0)
    keeps = unit(rng.normal(size=(20, 64)))
    burst = unit(rng.normal(size=64) + 0.03 * rng.normal(size=(10, 64)))
    y = np.r_[np.zeros(20, int), np.ones(10, int)]
    with pytest.raises(ImgrankError, match="the 10 you marked delete are 1 group of near-duplicates"):
        train_arrays(np.r_[keeps, burst], y, np.r_[keeps, burst], TrainConfig())
    scenes = unit(rng.normal(size=(10, 64)))
    result = train_arrays(np.r_[keeps, scenes], y, np.r_[keeps, scenes], TrainConfig())
    assert result.counts["held_out"]["delete"] == 10


def test_learnable_task_from_real_images_beats_chance(model_env):
    """Dark photos are the ones deleted: through the tiny model, the head finds them."""
    from imgrank.embed import load_embedder, preprocess_image

    rng = np.random.default_rng(0)
    n = 240
    y = (rng.random(n) < 0.25).astype(int)
    images = []
    for i in range(n):
        texture = rng.integers(0, 256, (48, 64, 3)) * 0.5 + rng.uniform(0, 255, 3) * 0.5
        images.append(Image.fromarray((texture * (0.35 if y[i] else 1.0)).astype(np.uint8)).resize((128, 96)))
    embedder = load_embedder()
    x = embedder.embed_images(np.stack([preprocess_image(im) for im in images]))
    # The tiny random model squeezes all images into a narrow cone, so "near-duplicate" must be stricter.
    result = train_arrays(x, y, x, TrainConfig(near_dup=0.9995, max_epochs=60))
    m = result.metrics["active"]
    assert m["ap"] >= m["chance_ap"] + 0.3
    assert m["roc_auc"] >= 0.9


def alike_family_set(seed: int = 0, dim: int = 64):
    """Screenshots of one app: an alike family (pairwise cosine about 0.93-0.97, so single linkage
    at 0.95 chains it into one group) holding most of the deletes; keeps are photos of many kinds,
    a few deletes are scattered among them."""
    rng = np.random.default_rng(seed)
    app = rng.normal(size=dim)
    family = unit(app + 0.22 * np.linalg.norm(app) / np.sqrt(dim) * rng.normal(size=(60, dim)))
    kinds = rng.normal(size=(12, dim))
    others = unit(kinds[rng.integers(0, 12, 200)] + 0.8 * rng.normal(size=(200, dim)))
    x = np.vstack([family, others]).astype(np.float32)
    y = np.r_[np.ones(60, int), (rng.random(200) < 0.05).astype(int)]
    return x, y


def test_an_alike_family_of_deletes_is_ranked_above_keeps_when_held_out():
    x, y = alike_family_set()
    fam = x[:60] @ x[:60].T
    assert np.median(fam[np.triu_indices(60, 1)]) > 0.9  # alike, as screenshots of one app are
    result = train_arrays(x[:-40], y[:-40], x[:-40], TrainConfig(max_epochs=60))
    assert result.counts["groups"] > 10  # the family did not become one group
    held = result.counts["held_out"]
    assert held["delete"] >= 0.8 * y[:-40].sum()  # deletes were held out (not all kept in training)
    # Members of the family the head never saw (held-out by the folds, and 20 brand-new ones)
    rng = np.random.default_rng(9)
    new_family = unit(x[:60].mean(axis=0) + 0.3 * x[:60].std(axis=0) * rng.normal(size=(20, x.shape[1])))
    new_keeps = x[-40:][y[-40:] == 0]
    p = predict(result.weights, np.vstack([new_family, new_keeps]))
    assert roc_auc(np.r_[np.ones(20), np.zeros(len(new_keeps))], p) >= 0.95
    fam_oof = result.oof[:60]
    keep_oof = result.oof[60:][y[60:-40] == 0]
    assert np.nanmedian(fam_oof) > np.nanquantile(keep_oof, 0.9)
    # never worse than the L2 logistic reference on the same held-out rows
    assert result.metrics["active"]["ap"] >= result.metrics["baseline"]["ap"] - 1e-9


def test_scores_are_calibrated_on_held_out_predictions():
    x, y = separable(400, seed=7, margin=0.0)
    flip = np.random.default_rng(1).choice(len(y), 20, replace=False)
    y[flip] ^= 1
    result = train_arrays(x, y, x, TrainConfig(max_epochs=40))
    assert result.calibration["method"] == "platt" and result.calibration["a"] > 0
    from imgrank.model import Head

    n_layers = sum(1 for k in result.weights if k.startswith("w"))
    p = Head(result.weights, {"n_layers": n_layers, "calibration": result.calibration}).predict(x)
    assert abs(p.mean() - y.mean()) < 0.1  # calibrated: the mean P(delete) is about the delete share
    assert (p >= 0.9995).mean() < 0.1  # `top` does not print 1.000 for much of the folder


def test_flipped_labels_are_found_by_suspects():
    db = open_db()
    x, y = separable(1000, seed=5)
    flipped = np.random.default_rng(6).choice(len(y), size=50, replace=False)  # 5%
    noisy = y.copy()
    noisy[flipped] ^= 1
    shas = store(db, x, noisy)
    train(db, TrainConfig(use_meta=False, max_epochs=60))
    wrong = {shas[i] for i in flipped}
    top = [s["sha256"] for s in runs.suspects(db, 100)]
    assert len(wrong & set(top)) / 50 >= 0.7


def test_suspects_before_any_training_says_what_to_run():
    with pytest.raises(ImgrankError, match="imgrank train"):
        runs.suspects(open_db())


def test_train_command_prints_honest_metrics_and_scores_everything():
    db = open_db()
    x, y = separable(200, seed=2)
    store(db, x, y)
    store(db, unit(np.random.default_rng(9).normal(size=(5, 16))))  # unlabelled photos
    result = CliRunner().invoke(cli, ["train", "--epochs", "40"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    for words in (
        "ROC AUC",
        "average precision",
        "precision@10 delete",
        "baseline",
        "confusion",
        "held out: ",
        "the active head was refit on all 200 labels",
        "205 photos scored",
    ):
        assert words in result.output
    run = runs.list_runs(db)[0]
    assert run["active"] and run["val_ap"] > 0.8
    head = load_head(run["head_path"])
    assert head.meta["counts"]["trained_on"] == len(labelled_set(db).y) == 200
    assert "calibration" in head.meta


def test_train_ends_with_a_verdict_in_plain_words_then_the_table_and_the_learning_curve():
    """The report opens with what an owner can check: of the deletes the head had not seen, how many
    it put near the top, against what a random order would; the metrics table comes after it."""
    import re

    db = open_db()
    x, y = separable(240, seed=4, margin=0.3)
    store(db, x, y)
    result = CliRunner().invoke(cli, ["train"])
    assert result.exit_code == 0 and result.exception is None, result.output
    out = result.stdout
    found = re.search(
        r"of the (\d+) photos you marked delete that it had not seen, it put (\d+) in its first (\d+) "
        r"\(of (\d+) held out; a random order would put about ([\d.]+) there\)",
        out,
    )
    assert found, out
    deletes, hits, first, photos, chance = (float(v) for v in found.groups())
    held = re.search(r"held out: (\d+) delete, (\d+) keep", out)
    assert deletes == int(held.group(1)) and photos == int(held.group(1)) + int(held.group(2))
    assert first >= 1.5 * deletes and chance == pytest.approx(deletes * first / photos, abs=0.05)
    assert deletes * 0.9 <= hits <= deletes  # a margin between the classes: nearly all of them
    assert "learning curve: held-out AP" in out
    assert out.index("you marked delete") < out.index("average precision")


def test_no_more_than_two_percent_of_a_folder_prints_as_one():
    """Labels that separate cleanly: the refit head is surer than its folds, and photos far from the
    boundary used to print 1.000 by the dozen (27 of a 293-photo folder in issue 23), which says
    nothing about their order. No score claims more than the held-out evidence can show."""
    db = open_db()
    x, y = separable(1200, seed=3, margin=0.0)
    store(db, x[:300], y[:300])
    store(db, x[300:])  # the rest of the folder, unlabelled
    assert CliRunner().invoke(cli, ["train"]).exit_code == 0
    result = CliRunner().invoke(cli, ["top", "-n", "2000"])
    assert result.exit_code == 0 and result.exception is None
    scores = [line.split()[1] for line in result.stdout.splitlines()[1:]]
    assert len(scores) == 1200
    assert sum(s == "1.000" for s in scores) <= 0.02 * len(scores), scores[:40]


def test_train_with_too_few_labels_is_one_clear_line():
    db = open_db()
    x, y = separable(30)
    store(db, x, np.r_[np.ones(3, int), np.zeros(27, int)])
    result = CliRunner().invoke(cli, ["train"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "label at least 7 more as delete" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_on_cuda_without_cuda_is_one_clear_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    db = open_db()
    x, y = separable(100)
    store(db, x, y)
    result = CliRunner().invoke(cli, ["train", "--device", "cuda"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "no CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert runs.list_runs(db) == []


def test_validation_dominated_by_one_group_is_warned_about():
    from imgrank.learn.evaluation import dominated_by_one_group

    y = np.r_[np.ones(10, int), np.zeros(40, int)]
    groups = np.r_[np.zeros(7), np.arange(1, 44)]  # 7 of the 10 deletes are one group
    held = np.ones(50, bool)
    assert "7 of its 10 delete photos" in dominated_by_one_group(y, groups, held)
    assert dominated_by_one_group(y, np.arange(50), held) is None


def library_world(n: int, seed: int, dim: int = 64):
    """Photos of eight kinds with a strong quality axis across them; the low-quality fifth is deleted.
    Every call is a sample of the same folder (the same kinds and axis)."""
    rng, folder = np.random.default_rng(seed), np.random.default_rng(99)
    kinds, quality = folder.normal(size=(8, dim)), unit(folder.normal(size=(1, dim)))[0]
    k, q = rng.integers(8, size=n), rng.normal(size=n)
    image = unit(kinds[k] + 3 * q[:, None] * quality + 0.7 * rng.normal(size=(n, dim)))
    return image, (q + 0.3 * rng.normal(size=n) < -0.85).astype(int)


def test_the_library_gives_the_prior_its_own_covariance():
    from imgrank.learn.logistic import block_scale, input_space

    library, _ = library_world(3000, 1)
    x = np.hstack([library[:40], np.random.default_rng(2).normal(size=(40, 3))]).astype(np.float32)
    space = input_space(x, (64, 0), library)
    z = (library - library.mean(0)) / library.std(0)
    cov = z.T @ z / len(z)
    basis = space.basis[:64, :64].astype(np.float64)
    lam = np.linalg.eigvalsh(cov)
    # an isotropic prior over the space is a prior over the standardised features with covariance
    # B·Bᵀ, the library's own covariance, scaled so the block keeps its one share (64 = width)
    assert np.allclose(basis @ basis.T, cov * 64 / (lam**2).sum(), atol=1e-4)
    assert np.allclose(space.basis[64:, 64:], np.diag(block_scale((64, 3))[64:]))  # the facts: as before
    assert np.allclose(space.basis[:64, 64:], 0) and np.allclose(space.mean[:64], library.mean(0), atol=1e-6)
    w = np.random.default_rng(3).normal(size=(5, 67)).astype(np.float32)  # a first layer over the space
    standardised = (x - space.mean) / space.std
    assert np.allclose(standardised @ space.fold(w).T, space(x) @ w.T, atol=1e-3)  # folds into the head
    assert np.allclose(space.unfold(space.fold(w)), w, atol=1e-3)


def test_unlabelled_photos_teach_a_few_labels():
    """With 30 labels, a logistic regression whose prior follows the folder's photos ranks new photos
    better than the same regression with the plain prior (the plain L2 logistic regression on the image
    vectors), at the same L2 strength; and train_arrays takes the library when asked (balance_blocks)."""
    from imgrank.learn.logistic import input_space

    with_library, plain = [], []
    for seed in range(6):
        library, _ = library_world(2000, 50 + seed)
        image, y = library_world(30, seed)
        test_image, test_y = library_world(1000, 100 + seed)
        space = input_space(image, (64, 0), library)
        with_library.append(
            average_precision(test_y, predict(fit_logistic(image, y, 1.0, space=space), test_image))
        )
        plain.append(average_precision(test_y, predict(fit_logistic(image, y, 1.0), test_image)))
    assert np.mean(with_library) > np.mean(plain) + 0.03, (with_library, plain)
    # the shaped prior (not the default), alone: no contrast block, which the library would also give
    config = TrainConfig(min_per_class=2, max_epochs=5, balance_blocks=True, contrast=0)
    a = train_arrays(image, y, image, config, blocks=(64, 0), library=library)
    b = train_arrays(image, y, image, config, blocks=(64, 0))
    assert not np.allclose(a.weights["w0"], b.weights["w0"])
    assert np.allclose(a.weights["mean"], library.mean(0), atol=1e-6)


def test_the_verdict_counts_the_held_out_deletes_in_the_first_one_and_a_half_times_as_many():
    from imgrank.learn.evaluation import first_k

    y = np.zeros(60, int)
    y[[0, 1, 2, 3, 4, 5, 6, 7, 8, 30, 40, 50]] = 1  # 12 deletes
    p = np.linspace(1, 0, 60)  # ranked in row order: 9 of them in the first 20
    v = first_k(y, p)
    assert v == {"deletes": 12, "k": 20, "found": 9, "chance": 4.0, "photos": 60}


def test_many_rows_fit_the_l2_path_by_lbfgs_as_well_and_far_quicker():
    """From a few thousand labels, Newton-Cholesky's n·d² steps made the regression the dearest part
    of `train` (25,000 labels: 9.8 s of 21.8). The path is fit by L-BFGS on float32 there: the same
    held-out ranking as Newton-Cholesky, at a fraction of the CPU time."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from threadpoolctl import threadpool_limits

    from imgrank.learn.logistic import Design, class_weights, input_space

    rng = np.random.default_rng(0)
    n, d = 8000, 515
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, :20].sum(1) + 3 * rng.normal(size=n) > 2).astype(int)
    train_rows, test_rows = np.arange(n) < 6000, np.arange(n) >= 6000
    l2s = (10000.0, 1000.0, 100.0, 10.0, 1.0, 0.1)
    design = Design(x, input_space(x))
    with threadpool_limits(limits=1):
        started = time.process_time()
        fits = design.path(train_rows, y[train_rows], l2s)
        cpu = time.process_time() - started
    z = design.coords
    exact = LogisticRegression(solver="newton-cholesky", C=1 / 100.0).fit(
        z[train_rows], y[train_rows], sample_weight=class_weights(y[train_rows])
    )
    ap_path = average_precision_score(y[test_rows], design.logit(fits[2], test_rows))
    ap_exact = average_precision_score(y[test_rows], z[test_rows] @ exact.coef_[0])
    assert abs(ap_path - ap_exact) < 0.002
    # Newton-Cholesky on these rows: about 1.5 s of CPU on one thread; L-BFGS: 0.1-0.2 s
    assert cpu < 0.6, f"{cpu:.2f} s of CPU for the L2 path on {train_rows.sum()} rows"


def test_a_fresh_process_fits_on_one_blas_thread():
    """`imgrank train` imports scikit-learn and scipy first inside `train_arrays`. scipy brings its own
    BLAS, which a thread limit set before it was loaded does not reach: its fits then ran on two
    threads, and on this two-core machine, busy, the first train on 500 labels took 16-23 s of CPU
    instead of 0.8-1.7. In a fresh process every BLAS that the fits use runs on one thread."""
    import subprocess
    import sys

    code = """
import numpy as np
from threadpoolctl import threadpool_info
import imgrank.learn.logistic as logistic
from imgrank.train import TrainConfig, train_arrays
seen, path = [], logistic.Design.path
def watched(*args, **kwargs):
    seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    return path(*args, **kwargs)
logistic.Design.path = watched
rng = np.random.default_rng(0)
x = rng.normal(size=(60, 8)).astype(np.float32)
train_arrays(x, (x[:, 0] > 0.5).astype(int), x, TrainConfig(min_per_class=2, threads=None))
print(sorted(set(seen)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "[1]", out.stdout


def _quality_or_name_folder(seed: int, n: int, by_name: bool):
    """Image vectors in 10 kinds with a low-variance quality direction, file-name vectors of two
    families (camera, messenger), three cheap facts. The owner deletes the worst quality (`by_name`
    False: the names say nothing) or the messenger saves (True: only the name tells)."""
    rng = np.random.default_rng(seed)
    centres, families = rng.normal(size=(10, 256)), rng.normal(size=(2, 256))
    q_dir = unit(rng.normal(size=(1, 256)))[0]
    q, source = rng.normal(size=n), (rng.random(n) < 0.2).astype(int)
    image = unit(centres[rng.integers(0, 10, n)] + 0.6 * rng.normal(size=(n, 256)) + 1.2 * q[:, None] * q_dir)
    name = unit(families[source] + 0.5 * rng.normal(size=(n, 256)))
    meta = rng.normal(size=(n, 3)).astype(np.float32)
    if by_name:
        y = source ^ (rng.random(n) < 0.05)
    else:
        y = (-q + rng.logistic(scale=0.3, size=n) > 0.85).astype(int)
    return np.hstack([image, name, meta]).astype(np.float32), y.astype(int), image


def _train_folder(x, y, image, rows, seed: int = 0, library: bool = True, contrast=TrainConfig.contrast):
    """`train_arrays` on these rows of a `_quality_or_name_folder` (image and name blocks of 256),
    with the whole folder as the library sample, as `train` passes it (`library` False: none)."""
    config = TrainConfig(min_per_class=2, seed=seed, contrast=contrast)
    sample = x[:, :512] if library else None
    return train_arrays(x[rows], y[rows], image[rows], config, blocks=(256, 256), library=sample)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_file_names_that_say_nothing_cost_the_regression_nothing(seed):
    """A low-variance quality direction in the image vector, file names of two families that say
    nothing about it. Given a sample of the folder's photos, the name vector is kept to the one
    direction between its families, and the regression on every feature ranks new photos as well as
    scikit-learn's L2 regression on the image vector alone (150 labels). With the names' 256 columns
    of noise it fell 0.06-0.16 of AP behind it. (The name directions alone: this folder's 10 kinds
    have no events for the contrast block to take out, and with it seed 1 came out 0.021 behind.)"""
    x, y, image = _quality_or_name_folder(seed, 1200, by_name=False)
    rows, new = np.arange(150), np.arange(150, 1200)
    folder = _train_folder(x, y, image, rows, seed, contrast=0)
    noisy = _train_folder(x, y, image, rows, seed, library=False)  # no sample: every column
    image_ap, _ = _references(x, y, image, rows, new)
    ap = average_precision(y[new], predict(folder.weights, x[new]))
    assert ap >= image_ap - 0.02, (ap, image_ap)
    assert ap > average_precision(y[new], predict(noisy.weights, x[new])) + 0.05


def test_the_name_vector_keeps_the_directions_between_name_families():
    """Gavish and Donoho's threshold on a sample of standardised name vectors: three families plus
    noise differ along two directions, one family plus noise along none; and a head trained with such
    a sample gives the name vector's noise no weight."""
    from imgrank.learn.directions import beyond_noise

    rng = np.random.default_rng(0)
    families = rng.normal(size=(3, 256))

    def names(n_families: int, n: int = 3000) -> np.ndarray:
        z = unit(families[rng.integers(0, n_families, n)] + 0.5 * rng.normal(size=(n, 256)))
        return (z - z.mean(0)) / z.std()  # centred, one scale (`regression_space`)

    three = beyond_noise(names(3))
    assert three.shape == (256, 2)
    between = unit(families[1:] - families[0]).T  # the families' differences lie in the kept plane
    assert np.linalg.norm(three.T @ between, axis=0) == pytest.approx([1, 1], abs=0.05)
    assert beyond_noise(names(1)).shape == (256, 0)
    assert beyond_noise(names(1, n=150)).shape == (256, 0)  # fewer photos than columns

    x, y, image = _quality_or_name_folder(1, 600, by_name=False)
    x[:, 256:512] = unit(families[0] + 0.5 * rng.normal(size=(600, 256)))  # every photo a camera photo
    head = _train_folder(x, y, image, slice(0, 150))
    assert not head.weights["w0"][0, 256:512].any() and head.weights["w0"][0, :256].any()


def test_a_taste_the_file_name_tells_keeps_every_feature():
    """...and the direction between the name families carries the taste the name tells."""
    x, y, image = _quality_or_name_folder(0, 400, by_name=True)
    for library in (False, True):
        result = _train_folder(x, y, image, slice(0, 150), library=library)
        assert average_precision(y[150:], predict(result.weights, x[150:])) > 0.8


def test_from_ten_thousand_labels_the_whole_name_vector_is_weighed():
    """With NAME_DIRECTIONS_BELOW labels or more, the regression weighs every column of the name
    vector (bench_train's 25,000 labels: its held-out AP is kept); with fewer, the noise of random
    names gets no weight at all."""
    from imgrank.learn.logistic import NAME_DIRECTIONS_BELOW, regression_space

    rng = np.random.default_rng(0)
    x = np.hstack([unit(rng.normal(size=(NAME_DIRECTIONS_BELOW, 256))) for _ in range(2)])
    x = np.hstack([x, rng.normal(size=(len(x), 3))]).astype(np.float32)
    names = slice(256, 512)
    many = regression_space(x, (256, 256), x[:, :512])
    few = regression_space(x[:500], (256, 256), x[:, :512])
    assert np.array_equal(many.basis, np.eye(515, dtype=np.float32))
    assert not few.basis[names, names].any() and np.array_equal(few.basis[:256, :256], np.eye(256))


def _references(x, y, image, rows, new):
    """Held-out AP on the rows `new` of bench_suite's two scikit-learn references fit on `rows`: the L2
    regression on the standardised image vector (C = 1, classes balanced) and the pipeline
    (StandardScaler + LogisticRegressionCV by average precision) on every feature."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000))
    cv = min(5, int(y[rows].sum()), int(len(rows) - y[rows].sum()))
    pipe = make_pipeline(
        StandardScaler(), LogisticRegressionCV(scoring="average_precision", cv=cv, max_iter=1000)
    )
    image_ap = average_precision(y[new], lr.fit(image[rows], y[rows]).predict_proba(image[new])[:, 1])
    pipe_ap = average_precision(y[new], pipe.fit(x[rows], y[rows]).predict_proba(x[new])[:, 1])
    return image_ap, pipe_ap


def _few_labels(by_name: bool, n: int, seeds=range(8)):
    """imgrank's held-out AP, the references' and what the head chose, on n labels drawn at random
    from the folder of each seed (new photos: the other half of the folder; the whole folder is the
    library sample, as `train` passes it); a draw with fewer than 2 deletes is skipped."""
    out = []
    for seed in seeds:
        x, y, image = _quality_or_name_folder(seed, 1200, by_name=by_name)
        rows, new = np.random.default_rng(seed).choice(600, n, replace=False), np.arange(600, 1200)
        if min(y[rows].sum(), n - y[rows].sum()) < 2:  # skipped for every learner, as bench_suite does
            continue
        result = _train_folder(x, y, image, rows, seed)
        ap = average_precision(y[new], predict(result.weights, x[new]))
        out.append((ap, *_references(x, y, image, rows, new), result.metrics["baseline"]))
    return out


def test_a_quality_taste_at_30_labels_is_learned_as_well_as_the_image_regression():
    """30 labels, 6-11 deletes: the folds, on a handful of held-out deletes, chose a strong penalty,
    under which a low-variance quality direction is hardly learnt. The evidence of every label says
    the file name and the facts explain nothing here, less than the image vector, and the penalty is
    the one it judged (C = 1)."""
    runs_ = _few_labels(by_name=False, n=30)
    ap, image_ap, pipe_ap = (np.mean([r[i] for r in runs_]) for i in range(3))
    assert ap >= image_ap - 0.01, (ap, image_ap)
    assert ap >= pipe_ap - 0.02
    assert sum(r[3]["chosen_by"] == "evidence" for r in runs_) >= 6
    assert all(r[3]["l2"] == 1.0 for r in runs_ if _names_explain_nothing(r[3]))


def _names_explain_nothing(baseline: dict) -> bool:
    """The evidence's rule: the file name and the facts explain the labels worse than the bias alone,
    and worse than the image vector does."""
    ev = baseline["evidence"]
    return ev is not None and ev["names"] < 0 and ev["image"] > ev["names"]


@pytest.mark.parametrize("n", [20, 30])
def test_a_name_taste_keeps_the_file_name_from_20_labels(n):
    """Only the file name tells: with 3-9 deletes the evidence that it matters is clear (above 2 in
    every folder here), so the folds choose the penalty, and the head ranks as well as the pipeline
    on the same draws."""
    runs_ = _few_labels(by_name=True, n=n)
    ap, image_ap, pipe_ap = (np.mean([r[i] for r in runs_]) for i in range(3))
    assert all(r[3]["chosen_by"] == "folds" and r[3]["evidence"]["names"] > 2 for r in runs_)
    # issue 23's target; at 30 labels 0.842 against 0.854 here, one draw of 8 deletes (seed 7) at
    # 0.81 against 0.89, its folds choosing l2 = 1 (on bench_suite's 20 seeds: -0.004)
    assert ap >= pipe_ap - 0.02 and ap > image_ap + 0.4


def test_the_laplace_evidence_is_scikit_learns():
    """`log_evidence` is the Laplace approximation of GaussianProcessClassifier with the kernel
    sigma_0² + x·y (its classes weigh the same when they are the same size)."""
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.gaussian_process.kernels import DotProduct

    from imgrank.learn.evidence import BIAS_VARIANCE, log_evidence

    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 8)) / 2
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    z[:30, 0] += 0.7
    kernel = DotProduct(sigma_0=np.sqrt(BIAS_VARIANCE), sigma_0_bounds="fixed")
    gpc = GaussianProcessClassifier(kernel=kernel, optimizer=None).fit(z, y)
    ours = log_evidence(z @ z.T + BIAS_VARIANCE, y)
    assert ours == pytest.approx(gpc.log_marginal_likelihood_value_, abs=1e-4)


def test_only_the_evidence_of_every_label_overrules_the_folds_penalty():
    """Folds of one or two deletes each choose a penalty mostly by luck. Below EVIDENCE_DELETES held
    out (9 deletes here), the evidence of every label sets it (C = 1) when it says the file name and
    the facts explain nothing; with 40 deletes, and whenever the name tells, the folds choose it."""
    for seed in (7, 9, 11):
        for by_name in (False, True):
            x, y, image = _quality_or_name_folder(seed, 800, by_name=by_name)
            for deletes in (9, 40):
                rows = np.r_[np.flatnonzero(y == 1)[:deletes], np.flatnonzero(y == 0)[: 4 * deletes]]
                result = _train_folder(x, y, image, rows, seed)
                b = result.metrics["baseline"]
                assert b["chosen_by"] == (
                    "evidence" if b["evidence"] and _names_explain_nothing(b) else "folds"
                )
                if b["chosen_by"] == "evidence":
                    assert b["l2"] == 1.0
                if by_name or deletes == 40:
                    assert b["chosen_by"] == "folds"


def test_an_mlp_that_wins_by_less_than_the_margin_is_not_chosen():
    """The MLP's rule, on held-out predictions made up to the point: better in every fold by a hair
    (pooled AP +0.001 or so) is not enough to replace the regression; better by a clear margin is."""
    from imgrank.learn.evaluation import average_precision
    from imgrank.learn.validation import SWITCH_MARGIN, mlp_beats_baseline

    rng = np.random.default_rng(3)
    y = np.tile([1, 0, 0, 0, 0], 80)
    fold = np.arange(len(y)) % 4
    base = y * 1.0 + rng.normal(0, 0.9, len(y))

    def better_by(shift: float) -> dict:
        mlp = base + shift * y  # each delete a little higher: better in every fold
        return {"baseline": base, "mlp": mlp}

    def pooled_gain(cv):
        return average_precision(y, cv["mlp"]) - average_precision(y, cv["baseline"])

    hair, clear = better_by(0.01), better_by(0.6)
    assert 0 < pooled_gain(hair) < SWITCH_MARGIN and pooled_gain(clear) > 2 * SWITCH_MARGIN
    assert not mlp_beats_baseline(y, fold, 4, hair)
    assert mlp_beats_baseline(y, fold, 4, clear)


def _train_30(by_name: bool, seed: int):
    x, y, image = _quality_or_name_folder(seed, 1200, by_name=by_name)
    rows = np.random.default_rng(seed).choice(600, 30, replace=False)
    return x, y, rows, _train_folder(x, y, image, rows, seed)


def test_the_report_says_when_the_evidence_chose_the_penalty():
    """A quality taste at 30 labels (the evidence's case) and a name taste (the folds choose): the
    report names who chose, so the owner is not told the folds did."""
    from imgrank.cli_text import format_report

    def report(by_name: bool, seed: int):
        r = _train_30(by_name, seed)[3]
        run = {
            "metrics": r.metrics,
            "counts": r.counts,
            "recipe": r.recipe,
            "epochs": r.epochs,
            "warnings": [],
        }
        return r.metrics["baseline"], format_report(run)

    chosen = [report(False, seed) for seed in range(8)]
    by_evidence = [text for b, text in chosen if b.get("chosen_by") == "evidence"]
    assert by_evidence, [b.get("evidence") for b, _ in chosen]
    assert all("the evidence of every label, not the folds, chose its penalty" in t for t in by_evidence)
    baseline, text = report(True, 0)
    assert baseline["chosen_by"] == "folds"
    assert "evidence" not in text and "image vector alone" not in text


def test_the_evidences_head_is_the_regression_it_judged():
    """Where the evidence chose, the head is the regression at C = 1 (the prior the evidence was
    computed with), not the strength a handful of held-out deletes picked: it ranks new photos as
    scikit-learn's LogisticRegression at C = 1 does, with the same class weights, on the same
    space (the features standardised, the name vector kept to its families' directions)."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression

    from imgrank.learn.head_math import with_contrast
    from imgrank.learn.logistic import class_weights, regression_space

    checked = 0
    for seed in range(8):
        x, y, rows, r = _train_30(False, seed)
        if r.metrics["baseline"].get("chosen_by") != "evidence":
            continue
        features = with_contrast(x, r.weights["centroids"])  # the space: every feature, then contrast
        space = regression_space(features[rows], (256, 256), x[:, :512], contrast=256)
        new = np.arange(600, 1200)
        ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8)
        ref.fit(space(features[rows]), y[rows], sample_weight=class_weights(y[rows]))
        ref_logit = ref.decision_function(space(features[new]))
        assert spearmanr(predict(r.weights, x[new]), ref_logit).statistic > 0.999, seed
        checked += 1
    assert checked >= 4


def test_a_fact_in_huge_units_is_standardised_like_any_other():
    """Standardising makes the head blind to a column's unit: facts in units 1e20 times larger (a
    crafted or broken `train --data` file) give the same head. Their float32 variance overflowed,
    the column went unscaled, and the evidence's Cholesky failed with a traceback."""
    rng = np.random.default_rng(3)
    n, d = 60, 16
    image, name = unit(rng.normal(size=(n + 200, d))), unit(rng.normal(size=(n + 200, d)))
    facts = rng.normal(size=(n + 200, 3))
    y = (image[:, 0] + facts[:, 0] + 0.3 * rng.normal(size=n + 200) > 0.8).astype(int)
    heads = []
    for scale in (1.0, 1e20):
        x = np.hstack([image, name, facts * scale]).astype(np.float32)
        result = train_arrays(x[:n], y[:n], image[:n], TrainConfig(min_per_class=2), blocks=(d, d))
        heads.append(predict(result.weights, x[n:]))
        assert np.isfinite(heads[-1]).all()
    assert np.corrcoef(heads[0], heads[1])[0, 1] > 0.999


def test_an_infinite_fact_is_unknown_like_a_missing_one():
    """An infinite value (log of a zero size in a hand-made `train --data` file) is unknown, as NaN
    is: the head trains, it equals the head with NaN there, and scores the row finitely. Before,
    scikit-learn refused the NaN that inf - inf made, with a traceback."""
    rng = np.random.default_rng(4)
    n, d = 60, 16
    image, name = unit(rng.normal(size=(n, d))), unit(rng.normal(size=(n, d)))
    facts = rng.normal(size=(n, 3))
    y = (image[:, 0] + facts[:, 0] + 0.3 * rng.normal(size=n) > 0.8).astype(int)
    heads = []
    for unknown in (np.inf, np.nan):
        f = facts.copy()
        f[[3, 7], [2, 0]] = [-unknown, unknown]
        x = np.hstack([image, name, f]).astype(np.float32)
        result = train_arrays(x, y, image, TrainConfig(min_per_class=2), blocks=(d, d))
        heads.append(predict(result.weights, x))
    assert np.isfinite(heads[0]).all()
    assert np.allclose(heads[0], heads[1], atol=1e-6)


class _FixedDesign:
    """A Design whose held-out predictions at each L2 strength are given (`cross_validate_logistic`
    asks it for a fold's path, then for the predictions of each fit)."""

    def __init__(self, scores: dict[float, np.ndarray]):
        self.scores = scores

    def path(self, rows, y, l2s):
        return list(l2s)

    def predict(self, fit, rows):
        return self.scores[fit][rows]


def test_the_strongest_penalty_that_ranks_as_well_as_the_best_is_chosen():
    """Pooled held-out APs within L2_TIE / sqrt(held-out deletes) of the best are a tie, and a tie
    goes to the stronger penalty; a weaker one that ranks better by more is still chosen."""
    from imgrank.learn.validation import L2_TIE, cross_validate_logistic

    y = np.r_[np.ones(10, int), np.zeros(30, int)]
    fold = np.arange(40) % 2
    perfect = np.r_[np.linspace(0.9, 1.0, 10), np.linspace(0.0, 0.8, 30)]
    one_keep_ahead = perfect.copy()
    one_keep_ahead[39] = 0.905  # one keep ahead of the last delete: AP 0.991, within the tie of 0.019
    worse = perfect.copy()
    worse[30:] = 0.97  # ten keeps ahead of every delete: far outside it
    for strong, expected in ((one_keep_ahead, 10000.0), (worse, 1.0)):
        gap = average_precision(y, perfect) - average_precision(y, strong)
        assert (gap <= L2_TIE / np.sqrt(10)) == (expected == 10000.0), gap
        chosen = cross_validate_logistic(
            _FixedDesign({1.0: perfect, 10000.0: strong}), y, fold, 2, (1.0, 10000.0)
        )
        assert chosen["l2"] == expected
        assert np.array_equal(chosen["p"], strong if expected == 10000.0 else perfect)


def test_a_name_taste_whose_strengths_tie_takes_the_strongest_and_ranks_as_the_pipeline():
    """bench_suite's name taste, seed 7, 30 labels (8 deletes, 3 labels flipped): the pooled held-out
    AP of every L2 strength lies between 0.36 and 0.38. The best of them (l2 = 1) ranked new photos at
    0.52 AP, where the scikit-learn pipeline reaches 0.95; the strongest, l2 = 10,000, ranks them
    at 0.95 too."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
    from suite_folders import BLOCKS, make

    pool, test, _ = make("name", 7, 1500, 1000)
    rows = np.random.default_rng([7, 30]).choice(len(pool.x), 30, replace=False)
    x, y, image = pool.x[rows], pool.y_given[rows], pool.image[rows]
    library = np.concatenate([pool.x, test.x])[:, : sum(BLOCKS)]
    result = train_arrays(x, y, image, TrainConfig(min_per_class=2, seed=7), blocks=BLOCKS, library=library)
    assert result.metrics["baseline"]["l2"] == 10000.0
    assert average_precision(test.y_true, predict(result.weights, test.x)) > 0.9


def _suite_draws(generator: str, n: int, configs: list[dict], seeds=range(8)):
    """bench_suite's folder of one taste (suite_folders.py), n labels at random per seed: per draw, the
    held-out AP of the head trained with each of `configs` (TrainConfig fields), of the L2 regression
    on the image vector alone (bench_suite's reference), and the results themselves."""
    import sys
    from pathlib import Path

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
    from suite_folders import BLOCKS, IMAGE_DIM, make

    aps, results = [], []
    for seed in seeds:
        pool, test, _ = make(generator, seed, 1500, 1000)
        rows = np.random.default_rng([seed, n]).choice(len(pool.x), n, replace=False)
        x, y, image = pool.x[rows], pool.y_given[rows], pool.image[rows]
        library = np.concatenate([pool.x, test.x])[:, : sum(BLOCKS)]
        row, got = [], []
        for fields in configs:
            config = TrainConfig(min_per_class=2, seed=seed, **fields)
            got.append(train_arrays(x, y, image, config, blocks=BLOCKS, library=library))
            row.append(average_precision(test.y_true, predict(got[-1].weights, test.x)))
        lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        lr = make_pipeline(StandardScaler(), lr).fit(image, y)
        row.append(average_precision(test.y_true, lr.predict_proba(test.image[:, :IMAGE_DIM])[:, 1]))
        aps.append(row)
        results.append(got)
    return np.array(aps), results


def test_a_quality_taste_is_learnt_from_how_photos_differ_from_the_photos_like_them():
    """bench_suite's quality taste (the worst shots of every kind, in events and bursts whose shots
    differ in quality), 50 labels, seeds 0-7. With the contrast block (each photo less the centre of
    its k-means cluster of the folder's photos) the head ranks new photos as well as the regression
    on the image vector alone, 0.03 behind without it; with more prior along the directions the
    folder's near-duplicates differ along, well above both (on the suite's 20 seeds, +0.10)."""
    configs = [{}, {"differ": False}, {"contrast": 0}]
    aps, results = _suite_draws("quality", 50, configs)
    for default, no_differ, no_contrast in results:
        assert "centroids" in default.weights and "centroids" in no_differ.weights
        assert "centroids" not in no_contrast.weights and no_differ.metrics["baseline"]["differ"] is None
    ap, without_differ, without, image_ap = aps.mean(axis=0)
    assert without_differ >= image_ap - 0.01, (without_differ, image_ap)
    assert without_differ >= without + 0.02, (without_differ, without)
    assert ap >= without_differ + 0.05 and ap >= image_ap + 0.05, (ap, without_differ, image_ap)


def test_the_prior_leans_on_how_bursts_differ_only_when_the_labels_follow_it():
    """The evidence of the labels decides (`evidence.prior_gain`): on the quality taste, whose
    deletes are the worse shots, the head leans on the direction bursts differ along in every draw,
    and the report says so; on the kinds taste, whose deletes are whole kinds, in few draws (each
    draw it leans on there costs AP: a direction the labels do not follow only adds noise)."""
    from imgrank.cli_text import contrast_line

    _, quality = _suite_draws("quality", 50, [{}])
    kept = [r.metrics["baseline"] for (r,) in quality]
    assert all(b["differ"] == 1 and b["differ_gain"] > 0 for b in kept), kept
    line = contrast_line(kept[0])
    assert "clusters of your folder), most by how shots of one burst differ (1 direction)" in line
    _, kinds = _suite_draws("kinds", 30, [{}])
    leaning = [r.metrics["baseline"]["differ"] is not None for (r,) in kinds]
    assert sum(leaning) <= 2, leaning
    assert all(
        (b["differ_gain"] > 0) == (b["differ"] is not None) for b in (r.metrics["baseline"] for (r,) in kinds)
    )
    assert "burst" not in (contrast_line(kinds[leaning.index(False)][0].metrics["baseline"]) or "")


def test_near_duplicates_differ_along_the_directions_a_sample_shows():
    """`differences`: bursts whose shots differ along one planted direction (and a little noise) give
    that direction; shots that differ by noise alike in every direction, or a folder without
    near-duplicates, give none; so does a folder with too few bursts. The regression's space puts
    DIFFER_PRIOR times the contrast block's prior scale along it, and still unfolds a stored head."""
    from imgrank.learn.contrast import CONTRAST_PRIOR
    from imgrank.learn.directions import DIFFER_GROUPS, DIFFER_PRIOR, differences
    from imgrank.learn.logistic import regression_space

    rng = np.random.default_rng(0)
    planted = unit(rng.normal(size=(1, 64)))[0]

    def folder(bursts: int, along: float, noise: float = 0.02) -> np.ndarray:
        """Bursts of 4 shots of a scene each (cosine about 0.97 within a burst)."""
        shots = np.repeat(unit(rng.normal(size=(bursts, 64))), 4, axis=0)
        shots += along * rng.normal(size=(len(shots), 1)) * planted + noise * rng.normal(size=shots.shape)
        return unit(shots)

    found = differences(folder(100, 0.05), 64)
    assert found.shape == (64, 1) and abs(found[:, 0] @ planted) > 0.95
    assert differences(folder(100, 0.0), 64) is None  # shots differ by noise alone
    assert differences(unit(rng.normal(size=(400, 64))), 64) is None  # no near-duplicates
    assert differences(folder(DIFFER_GROUPS // 2 - 2, 0.05), 64) is None  # too few bursts (of 2+ shots)
    assert differences(None, 64) is None

    x = rng.normal(size=(40, 20)).astype(np.float32)
    direction = unit(rng.normal(size=(1, 8))).T
    space = regression_space(x, contrast=8, differ=direction)
    block = space.basis[12:, 12:].astype(np.float64)
    along = direction[:, 0] / space.std[12:]  # the direction in the standardised columns
    along /= np.linalg.norm(along)
    across = np.linalg.qr(np.c_[along, rng.normal(size=(8, 7))])[0][:, 1:]
    assert np.linalg.norm(block @ along) == pytest.approx(CONTRAST_PRIOR * DIFFER_PRIOR, rel=1e-4)
    assert np.allclose(np.linalg.norm(block @ across, axis=0), CONTRAST_PRIOR, rtol=1e-4)
    assert np.array_equal(space.basis[:12, :12], np.eye(12)) and not space.basis[:12, 12:].any()
    w = rng.normal(size=(1, 20)).astype(np.float32)
    assert np.allclose(space.unfold(space.fold(w)), w, atol=1e-5)


def test_the_contrast_block_has_its_own_prior_scale_and_needs_a_folder_to_cluster():
    """The regression's space scales the contrast block's standardised columns by CONTRAST_PRIOR (its
    pseudo-inverse by the reciprocal, so a stored head unfolds back); centroids need a library sample
    with at least four photos a cluster."""
    from imgrank.learn.contrast import CONTRAST_PRIOR, centroids
    from imgrank.learn.logistic import regression_space

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 20)).astype(np.float32)
    space = regression_space(x, contrast=8)
    assert np.allclose(space.basis[12:, 12:], CONTRAST_PRIOR * np.eye(8))
    assert np.array_equal(space.basis[:12, :12], np.eye(12)) and not space.basis[:12, 12:].any()
    w = rng.normal(size=(1, 20)).astype(np.float32)
    assert np.allclose(space.unfold(space.fold(w)), w, atol=1e-6)
    assert centroids(None, 16, 50) is None and centroids(x, 16, 50, 0).shape == (10, 16)
    assert centroids(x[:7], 16, 50) is None and centroids(x, 16, 0) is None


def test_the_report_says_whether_the_head_weighs_how_photos_differ_from_their_cluster():
    """With a library sample and few labels the head has the contrast block, and the report says so;
    from 15 held-out deletes it says which way the folds went, with both held-out APs; a bare
    `train_arrays` (no library) has none and says nothing of it."""
    from imgrank.cli_text import format_report

    def report(result) -> str:
        run = {"metrics": result.metrics, "counts": result.counts, "recipe": result.recipe, "epochs": 0}
        return format_report({**run, "warnings": []})

    x, y, image = _quality_or_name_folder(0, 1200, by_name=False)
    few = _train_folder(x, y, image, np.arange(30))
    k = few.metrics["baseline"]["contrast"]
    assert "centroids" in few.weights and k == len(few.weights["centroids"]) == 50
    line = f"how each photo differs from the photos like it (the nearest of {k} clusters of your folder)"
    assert line in report(few) and line + " (held-out AP" not in report(few)  # 30 labels: not compared
    many = _train_folder(x, y, image, np.arange(300))
    aps = many.metrics["baseline"]["contrast_ap"]
    kept = many.metrics["baseline"]["contrast"] is not None
    tie = 0.06 / np.sqrt(many.counts["held_out"]["delete"])  # validation.L2_TIE / sqrt(deletes)
    assert kept == ("centroids" in many.weights) == (aps["without"] <= aps["with"] + tie)
    assert f"with it, {aps['without']:.3f} without)" in report(many)
    bare = _train_folder(x, y, image, np.arange(30), library=False)
    assert "centroids" not in bare.weights and "differs from the photos like it" not in report(bare)


def test_a_folder_of_copies_clusters_without_a_warning_and_a_big_folder_scores_in_slices(recwarn):
    """Forty copies of three photos: fewer distinct photos than clusters, which k-means warns about;
    the centres are those photos and nothing is printed. Scoring more photos than one slice gives the
    same scores as scoring each photo alone."""
    from imgrank.learn.contrast import centroids
    from imgrank.learn.head_math import SCORE_ROWS, Head

    rng = np.random.default_rng(0)
    three = rng.normal(size=(3, 16)).astype(np.float32)
    found = centroids(three[np.arange(40) % 3], 16, 50)
    assert len(found) == 10 and not [w for w in recwarn if "distinct clusters" in str(w.message)]
    assert {tuple(np.round(c, 5)) for c in found} <= {tuple(np.round(c, 5)) for c in three}
    weights = {
        "mean": np.zeros(32, np.float32),
        "std": np.ones(32, np.float32),
        "w0": rng.normal(size=(1, 32)).astype(np.float32),
        "b0": np.zeros(1, np.float32),
        "centroids": found,
    }
    head = Head(weights, {"n_layers": 1})
    x = rng.normal(size=(SCORE_ROWS + 5, 16)).astype(np.float32)
    whole = head.logit(x)
    assert whole.shape == (len(x),)
    assert np.allclose(
        whole[[0, SCORE_ROWS - 1, SCORE_ROWS, -1]],
        [head.logit(x[[i]])[0] for i in (0, SCORE_ROWS - 1, SCORE_ROWS, -1)],
        atol=1e-5,
    )
