"""Near-duplicates and bursts: ANN grouping without chains, one keeper per group, exact copies."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from imgrank import config
from imgrank.cli import cli
from imgrank.db import open_db, set_setting, to_blob
from imgrank.dupes import moved_up, near_groups
from imgrank.order import ranked


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bursts(n_groups: int, size: int, singles: int, dim: int = 64, seed: int = 0):
    """Tight groups (similarity ~0.99 to their centre) plus unrelated photos; the true group of each row."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_groups, dim)))
    rows = [unit(c + rng.normal(0, 0.1 / np.sqrt(dim), size=(size, dim))) for c in centres]
    truth = [g for g in range(n_groups) for _ in range(size)] + [-1] * singles
    return np.concatenate([*rows, unit(rng.normal(size=(singles, dim)))]), np.array(truth)


def test_groups_are_found_exactly_and_singles_stay_alone():
    x, truth = bursts(40, 5, 300)
    group = near_groups(x, threshold=0.95)
    assert (group[truth == -1] == -1).all()
    for g in range(40):
        members = group[truth == g]
        assert len(set(members)) == 1 and members[0] >= 0
    assert len(set(group[truth >= 0])) == 40


def test_a_slow_pan_does_not_chain_into_one_group():
    """Each shot is 0.96 from the next, the ends are far apart: no member strays from its leader."""
    dim = 32
    angles = np.arange(30) * 0.28  # cos(0.28) = 0.961
    x = np.zeros((30, dim), np.float32)
    x[:, 0], x[:, 1] = np.cos(angles), np.sin(angles)
    group = near_groups(x, threshold=0.95)
    assert len(set(group[group >= 0])) > 1
    for i, g in enumerate(group):
        if g >= 0:
            assert float(x[i] @ x[g]) >= 0.95 - 1e-6


def store(db, vectors, scores, paths):
    """Present, scored photos as a scan and a head would leave them (paths may share a content)."""
    model = config.model_name()
    set_setting(db, "embed_model", model)  # as a scan records it
    with db.atomic():
        db.execute("INSERT INTO roots (path, added_at) VALUES ('/photos', 0)")
        for path, sha in paths:
            db.execute(
                "INSERT INTO files (path, root_id, sha256, state, size, mtime_ns) "
                "VALUES (?, 1, ?, 'ok', 1, 0)",
                [path, sha],
            )
        for sha, v in vectors.items():
            db.execute("INSERT INTO vectors VALUES (?, ?, ?, ?)", [sha, model, len(v), to_blob(v)])
            db.execute("INSERT INTO scores VALUES (?, 1, ?, 0)", [sha, scores[sha]])


def test_dupes_command_marks_keepers_and_the_order_moves_the_others_up():
    db = open_db()
    x, truth = bursts(2, 3, 4, dim=16, seed=3)
    shas = [f"{i:064x}" for i in range(len(x))]
    scores = dict(zip(shas, [0.1, 0.2, 0.3, 0.5, 0.05, 0.15, 0.4, 0.45, 0.35, 0.6], strict=True))
    paths = [(f"/photos/{i}.jpg", s) for i, s in enumerate(shas)] + [("/photos/copy-of-9.jpg", shas[9])]
    store(db, dict(zip(shas, x, strict=True)), scores, paths)

    result = CliRunner().invoke(cli, ["dupes", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    groups = json.loads(result.output)
    kinds = sorted(g["kind"] for g in groups)
    assert kinds == ["exact copies", "near-duplicates", "near-duplicates"]
    by_keeper = {next(p["path"] for p in g["photos"] if p["keeper"]): g for g in groups}
    # The keeper is the photo least likely to be deleted; copies keep the first path.
    assert set(by_keeper) == {"/photos/0.jpg", "/photos/4.jpg", "/photos/9.jpg"}
    assert [p["path"] for p in by_keeper["/photos/0.jpg"]["photos"]] == [
        f"/photos/{i}.jpg" for i in (0, 1, 2)
    ]

    order = {r.path: r.score for r in ranked(db)}
    assert order["/photos/0.jpg"] == 0.1 and order["/photos/4.jpg"] == 0.05  # keepers keep their rank
    assert order["/photos/2.jpg"] == moved_up(0.3) and order["/photos/copy-of-9.jpg"] == moved_up(0.6)
    assert order["/photos/7.jpg"] == 0.45  # not in a group: untouched
    assert list(order) == sorted(order, key=lambda p: (-order[p], p))

    text = CliRunner().invoke(cli, ["dupes"])
    assert text.exit_code == 0 and "3 groups among 10 photos" in text.output
    assert "keep  0.100  /photos/0.jpg" in text.output


def test_bad_threshold_is_one_clear_line():
    result = CliRunner().invoke(cli, ["dupes", "--threshold", "1.5"])
    assert result.exit_code == 1 and "between 0 and 1" in result.output
