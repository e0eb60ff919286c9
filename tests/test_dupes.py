"""Near-duplicates and bursts: exact and ANN grouping without chains, one keeper per group, exact
copies, groups kept current by `refresh` (scan, the daemon with a real observer)."""

from __future__ import annotations

import json
import os
import threading

import helpers
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from imgrank import config, dupes
from imgrank.cli import cli
from imgrank.daemon import loop
from imgrank.dupes import moved_up, near_groups
from imgrank.learn.neighbours import EXACT_BELOW
from imgrank.order import ranked
from imgrank.ranking import dupe_listing
from imgrank.store import dupes as dupe_groups
from imgrank.store.db import open_db, set_setting, to_blob
from imgrank.store.scores import all_scores


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bursts(n_groups: int, size: int, singles: int, dim: int = 64, seed: int = 0):
    """Tight groups (similarity ~0.99 to their centre) plus unrelated photos; the true group of each row."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_groups, dim)))
    rows = [unit(c + rng.normal(0, 0.1 / np.sqrt(dim), size=(size, dim))) for c in centres]
    truth = [g for g in range(n_groups) for _ in range(size)] + [-1] * singles
    return np.concatenate([*rows, unit(rng.normal(size=(singles, dim)))]), np.array(truth)


@pytest.mark.parametrize("exact", [True, False], ids=["all pairs", "index"])
def test_groups_are_found_exactly_and_singles_stay_alone(exact):
    x, truth = bursts(40, 5, 300)
    group = near_groups(x, threshold=0.95, exact=exact)
    assert (group[truth == -1] == -1).all()
    for g in range(40):
        members = group[truth == g]
        assert len(set(members)) == 1 and members[0] >= 0
    assert len(set(group[truth >= 0])) == 40


def library(n: int, dim: int = 64, seed: int = 1) -> np.ndarray:
    """n photos in a cone (unrelated ones near 0.5, as CLIP's are), a third in bursts of 2-8 shots
    ~0.98 apart, the bursts' rows together as a camera writes them; and a burst of 40 at the end."""
    rng = np.random.default_rng(seed)
    x = 0.9 * unit(rng.normal(size=(1, dim))) + unit(rng.normal(size=(n, dim)))
    i = 0
    while i < n // 3:
        size = int(rng.integers(2, 9))
        x[i : i + size] = unit(x[i : i + 1]) + rng.normal(0, 0.13 / np.sqrt(dim), size=(size, dim))
        i += size
    long = unit(x[-1:]) + rng.normal(0, 0.1 / np.sqrt(dim), size=(40, dim))
    return unit(np.concatenate([x, long]))


def test_the_index_finds_what_all_pairs_find_the_same_every_run_and_long_bursts_whole():
    x = library(EXACT_BELOW + 500)
    exact = near_groups(x, exact=True)
    found = near_groups(x)  # above EXACT_BELOW: the index
    assert (found == exact).all()
    assert (near_groups(x) == found).all()  # pivots drawn with a fixed seed: the same cells, groups
    long = found[-41:]  # 40 shots around one photo: one group of 41
    assert len(set(long)) == 1 and long[0] >= 0 and (found == long[0]).sum() == 41
    assert len(set(exact[exact >= 0])) > 300  # ~370 bursts: the comparison is not of empty groupings


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


def groups_of(db) -> list[set[str]]:
    """The stored near-duplicate groups (no regrouping), as sets of content hashes."""
    out: dict[int, set[str]] = {}
    for sha, g in dupe_groups.groups(db).items():
        out.setdefault(g, set()).add(sha)
    return sorted(out.values(), key=min)


def test_refresh_compares_only_what_changed_and_agrees_with_a_full_regrouping():
    db = open_db()
    x, truth = bursts(6, 3, 30, dim=32, seed=5)
    shas = [f"{i:064x}" for i in range(len(x))]
    rng = np.random.default_rng(0)
    later = {  # a shot of burst 0 taken later, and a new burst of two around an old single photo
        "a" * 64: unit(x[0:1] + rng.normal(0, 0.02, size=(1, 32)))[0],
        "b" * 64: unit(x[25:26] + rng.normal(0, 0.02, size=(1, 32)))[0],
    }
    store(db, dict(zip(shas, x, strict=True)), dict.fromkeys(shas, 0.5), [(f"/photos/{s}", s) for s in shas])
    assert dupes.refresh(db)["how"] == "all"  # nothing stored yet
    assert len(groups_of(db)) == 6 and dupes.refresh(db)["how"] == "unchanged"

    store_more(db, later)
    done = dupes.refresh(db)
    assert done["how"] == "some" and done["new"] == 2
    after = groups_of(db)
    assert set(shas[0:3]) | {"a" * 64} in after and {shas[25], "b" * 64} in after
    assert after == groups_of_regrouped(db)

    db.execute("UPDATE files SET state = 'missing' WHERE sha256 IN (?, ?)", [shas[3], shas[25]])
    done = dupes.refresh(db)
    assert done["how"] == "some" and done["gone"] == 2
    assert set(shas[4:6]) in groups_of(db) and not any("b" * 64 in g for g in groups_of(db))
    assert groups_of(db) == groups_of_regrouped(db)
    assert dupes.refresh(db, threshold=0.999)["how"] == "all"  # another threshold: everything again
    assert groups_of(db) == [] and dupes.refresh(db)["threshold"] == 0.999  # and it is kept


def store_more(db, vectors: dict) -> None:
    model = config.model_name()
    with db.atomic():
        for sha, v in vectors.items():
            db.execute(
                "INSERT INTO files (path, root_id, sha256, state, size, mtime_ns) "
                "VALUES (?, 1, ?, 'ok', 1, 0)",
                [f"/photos/{sha}", sha],
            )
            db.execute("INSERT INTO vectors VALUES (?, ?, ?, ?)", [sha, model, len(v), to_blob(v)])


def groups_of_regrouped(db) -> list[set[str]]:
    """What grouping everything afresh gives (the stored groups are put back after)."""
    kept = db.execute("SELECT sha256, group_id FROM dupe_groups").fetchall()
    dupes.regroup(db)
    fresh = groups_of(db)
    with db.atomic():
        db.execute("DELETE FROM dupe_groups")
        db.conn.executemany("INSERT INTO dupe_groups VALUES (?, ?)", kept)
    return fresh


def shot(path, shift: int) -> None:
    """One shot of a burst: the same scene, its shapes `shift` pixels along (a hand-held camera)."""
    rng = np.random.default_rng(100)
    img = Image.new("RGB", (640, 480), (90, 140, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 300, 640, 480], fill=(60, 110, 50))
    for _ in range(6):
        x0, y0 = int(rng.integers(0, 560)) + shift, int(rng.integers(160, 420))
        box = [x0, y0, x0 + int(rng.integers(30, 120)), y0 + int(rng.integers(30, 90))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90)


def wait_for(condition, timeout: float = 30.0):
    return helpers.wait_for(condition, timeout, every=0.1)


def stored_listing() -> list[dict]:
    """The groups as stored (what `top`, `order` and the review page use), without regrouping."""
    db = open_db()
    try:
        return dupe_listing(db)
    finally:
        db.close()


def near(listing: list[dict]) -> dict[frozenset, str]:
    """Near-duplicate groups by their members' names -> the keeper's name."""
    return {
        frozenset(os.path.basename(p["path"]) for p in g["photos"]): next(
            os.path.basename(p["path"]) for p in g["photos"] if p["keeper"]
        )
        for g in listing
        if g["kind"] == "near-duplicates"
    }


BURST = frozenset(f"burst_{j}.jpg" for j in range(4))


@pytest.mark.slow
def test_the_daemon_groups_a_burst_as_it_arrives_and_finds_a_new_keeper_when_one_is_deleted(
    model_env, tmp_path
):
    """Real watchdog events, the tiny model, no `imgrank dupes`: the burst is one group, one keeper,
    and the order on disk moves the other shots up; deleting the keeper makes another one keeper."""
    root = tmp_path / "photos"
    for i in range(3):
        scene_photo(root / f"other_{i}.jpg", i)
    w = loop.Watcher([root], loop.WatchConfig(settle=0.3, reorder_interval=0.2, heartbeat=0.5))
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        wait_for(w.ready.is_set)
        assert near(stored_listing()) == {}
        for j in range(4):
            shot(root / f"burst_{j}.jpg", shift=4 * j)
        groups = wait_for(lambda: near(stored_listing()))
        assert set(groups) == {BURST}  # the shots of the burst, and no other photo
        keeper = groups[BURST]
        db = open_db()
        own = all_scores(db)  # each photo's own score (the prior's here)
        burst = [r for r in ranked(db) if os.path.basename(r.path) in BURST]  # as `top` and `order` see it
        assert min(burst, key=lambda r: own[r.sha256]).path.endswith(keeper)  # the keeper: the best...
        for r in burst:  # ...keeps its score; the other shots move up the deletion order
            assert r.score == (own[r.sha256] if r.path.endswith(keeper) else moved_up(own[r.sha256]))
        # ...and the daemon's order on disk follows: newest first is least wanted, the keeper last of them.
        wait_for(lambda: sorted(BURST, key=lambda n: -os.stat(root / n).st_mtime) == by_rank(db, BURST))

        (root / keeper).unlink()
        left = BURST - {keeper}
        groups = wait_for(lambda: (g := near(stored_listing())) and set(g) == {left} and g)
        assert groups[left] != keeper
        result = CliRunner().invoke(cli, ["dupes", "--json"])  # grouping afresh agrees
        assert result.exit_code == 0 and result.exception is None, result.output
        assert near(json.loads(result.output)) == groups
    finally:
        w.stop()
        t.join(timeout=10)
    assert not t.is_alive()


def by_rank(db, names) -> list[str]:
    return [os.path.basename(r.path) for r in ranked(db) if os.path.basename(r.path) in names]


def scene_photo(path, seed: int) -> None:
    """A different photo for each seed (flat shapes on a plain background)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (640, 480), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
        draw.rectangle([x0, y0, x0 + 80, y0 + 80], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90)


def test_scan_keeps_groups_current_without_imgrank_dupes(model_env, tmp_path):
    root = tmp_path / "photos"
    scene_photo(root / "other_0.jpg", 0)
    for args in (["scan", str(root)], ["scan", "--json"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and result.exception is None, result.output
    for j in range(4):
        shot(root / f"burst_{j}.jpg", shift=4 * j)
    result = CliRunner().invoke(cli, ["scan", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(result.output)["near_duplicate_groups"] == 1
    assert set(near(stored_listing())) == {BURST}


def test_bad_threshold_is_one_clear_line():
    result = CliRunner().invoke(cli, ["dupes", "--threshold", "1.5"])
    assert result.exit_code == 1 and "between 0 and 1" in result.output
