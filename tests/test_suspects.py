"""Finding wrong labels with few labels (`label_check`, `imgrank suspects`), and feature blocks that
each get one share of the prior (`block_scale`), so a few labels can lean on a cheap fact."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import separable, store, unit

from imgrank import runs
from imgrank.cli import cli
from imgrank.learn.evaluation import average_precision
from imgrank.learn.logistic import block_scale, fit_logistic, predict, spec_blocks
from imgrank.store.db import open_db
from imgrank.train import TrainConfig, train, train_arrays


def test_each_block_of_features_gets_one_share_of_the_prior():
    scale = block_scale((256, 256, 3))
    assert scale.shape == (515,)
    assert np.allclose(scale[:512], 1.0) and np.allclose(scale[512:], np.sqrt(256 / 3))
    # every block's columns, squared and summed, weigh the same
    assert np.isclose((scale[:256] ** 2).sum(), (scale[512:] ** 2).sum())
    assert np.allclose(block_scale((64, 0, 3))[64:], np.sqrt(64 / 3))  # no name vectors: two blocks
    spec = {"embed_model": "m", "image_dim": 64, "name_dim": 32, "meta": ["a", "b", "c"]}
    assert spec_blocks(spec) == (64, 32)


def fact_world(n: int, seed: int):
    """Photos whose image vectors say little and whose pixel count says a lot: unwanted ones are
    mostly small (thumbnails, screenshots), as the cheap facts often tell in a real folder."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    direction = unit(rng.normal(size=(1, 128)))[0]
    image = unit(rng.normal(size=(n, 128)) + 0.6 * (y[:, None] - 0.25) * direction)
    pixels = np.log(12e6) - 2.0 * y + 1.0 * rng.normal(size=n)
    meta = np.stack([pixels, rng.choice([-0.29, 0.29], n), pixels - 3.4 + 0.3 * rng.normal(size=n)], 1)
    return np.hstack([image, meta]).astype(np.float32), y, image


def test_a_few_labels_lean_on_a_cheap_fact():
    aps = {True: [], False: []}
    for seed in range(3):
        x, y, image = fact_world(30, seed)
        x_test, y_test, _ = fact_world(600, 100 + seed)
        for balance in (True, False):
            config = TrainConfig(min_per_class=3, max_epochs=30, seed=seed, balance_blocks=balance)
            result = train_arrays(x, y, image, config, blocks=(128, 0))
            aps[balance].append(average_precision(y_test, predict(result.weights, x_test)))
    assert np.mean(aps[True]) > np.mean(aps[False]) + 0.05
    assert np.mean(aps[True]) > 0.6


def test_label_check_is_calibrated_and_leaves_never_held_out_rows_unknown():
    x, y = separable(80, seed=4, margin=0.3)
    x[:12] = x[0] + 1e-4 * np.random.default_rng(0).normal(size=(12, x.shape[1]))  # one shot, 12 times
    result = train_arrays(x, y, x, TrainConfig(max_epochs=20))
    assert result.counts["too_big"][0]["size"] == 12
    assert np.isnan(result.check[:12]).all()  # a group too big to hold out is never checked
    checked = result.check[12:]
    assert np.isfinite(checked).all()
    # calibrated: the base rate is back (fits weigh the classes equally, the check does not)
    assert abs(checked.mean() - y[12:].mean()) < 0.08


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wrong_label_among_few_is_a_top_suspect(seed):
    db = open_db()
    x, y = separable(60, dim=16, seed=seed, margin=0.8)
    wrong = np.random.default_rng(seed).choice(len(y), size=3, replace=False)  # 5%
    noisy = y.copy()
    noisy[wrong] ^= 1
    shas = store(db, unit(x), noisy)
    train(db, TrainConfig(use_meta=False, max_epochs=30, min_per_class=5))
    top = [s["sha256"] for s in runs.suspects(db, 6)]  # the top 2 x flips
    assert len({shas[i] for i in wrong} & set(top)) >= 2

    result = CliRunner().invoke(cli, ["suspects", "-n", "3"])
    assert result.exit_code == 0 and result.exception is None
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("P(label)")
    assert "never saw the photo" in result.stderr  # why, in one line
    assert float(lines[1].split()[0]) <= float(lines[2].split()[0]) <= float(lines[3].split()[0])


def test_the_fit_on_the_rows_span_is_scikit_learns_fit_on_every_feature():
    """The regression is fit on coordinates of the span of its rows (`Design`), fewer than the
    features when labels are few: the same head as scikit-learn's LogisticRegression on all the
    standardised features, with the same class weights and C = 1 / l2."""
    from sklearn.linear_model import LogisticRegression

    from imgrank.learn.logistic import class_weights, input_space

    x, y = separable(40, dim=120, seed=1, margin=0.0)  # fewer rows than features
    y[:3] ^= 1
    space = input_space(x)
    ours = predict(fit_logistic(x, y, 10.0, space=space), x)
    full = LogisticRegression(C=0.1, tol=1e-10, max_iter=10000).fit(
        space(x), y, sample_weight=class_weights(y)
    )
    assert np.allclose(ours, full.predict_proba(space(x))[:, 1], atol=1e-4)


def test_suspect_order_is_p_of_the_given_label_ascending_without_unknowns():
    from imgrank.learn.suspects import suspect_order

    p_delete = np.array([0.9, 0.2, np.nan, 0.6, 0.4, 0.8])
    labels = np.array([1, 1, 0, 0, 0, 1])  # P(given label): 0.9, 0.2, -, 0.4, 0.6, 0.8
    assert suspect_order(p_delete, labels).tolist() == [1, 3, 4, 5, 0]
    tie = suspect_order(np.array([0.25, 0.75, 0.25]), np.array([1, 0, 1]))
    assert tie.tolist() == [0, 1, 2]  # equal doubt: the rows' own order


def test_label_check_is_folds_and_leave_group_out_averaged_as_scikit_learn_computes_them():
    """The check's logit per photo: the mean over the fold splits of the held-out logit, averaged half
    and half with the logit of a fit on every label but the photo's near-duplicate group; then Platt.
    Recomputed here with scikit-learn's LogisticRegression and LeaveOneGroupOut on the standardised
    features, on the same folds and groups."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut

    from imgrank.learn.evaluation import near_duplicate_groups, stratified_group_folds
    from imgrank.learn.head_math import calibrated, standardise, standardiser
    from imgrank.learn.logistic import class_weights, fit_platt

    x, y = separable(48, dim=12, seed=3, margin=0.1)
    y[[0, 7, 20]] ^= 1  # wrong labels
    x[31] = x[30] + 1e-4  # one pair of near-duplicates: held out together
    config = TrainConfig(min_per_class=3, seed=2)
    result = train_arrays(x, y, x, config)
    l2, k = result.metrics["baseline"]["l2"], result.counts["folds"]
    z = standardise(x, *standardiser(x))
    groups = near_duplicate_groups(x, config.near_dup, config.max_group)
    assert groups[30] == groups[31] and len(np.unique(groups)) == len(y) - 1

    def fit_logit(train, test):
        model = LogisticRegression(C=1 / l2, tol=1e-10, max_iter=10000)
        model.fit(z[train], y[train], sample_weight=class_weights(y[train]))
        return model.decision_function(z[test])

    splits = []
    for r in range(config.check_splits):
        fold = stratified_group_folds(y, groups, k, config.seed + 1000 * r).fold
        one = np.empty(len(y))
        for f in range(k):
            one[fold == f] = fit_logit(fold != f, fold == f)
        splits.append(one)
    alone = np.empty(len(y))
    for rest, group in LeaveOneGroupOut().split(z, y, groups):
        alone[group] = fit_logit(rest, group)
    mean = (np.mean(splits, 0) + alone) / 2
    reference = calibrated(mean, fit_platt(mean, y))
    assert np.allclose(result.check, reference, atol=2e-3)
    # and not the folds alone, as before: the leave-group-out half moves the check
    folds_only = np.mean(splits, 0)
    assert not np.allclose(result.check, calibrated(folds_only, fit_platt(folds_only, y)), atol=2e-3)
