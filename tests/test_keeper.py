"""The burst keeper learned from the owner: inside near-duplicate groups, the shot they keep over the
shots they delete. `dupes`, the bursts queue, the report and `order` follow it; without enough of
the owner's choices, the lowest deletion score stays the keeper."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import run_python
from PIL import Image

from imgrank import config, dupes
from imgrank.cli import cli
from imgrank.learn import keeper
from imgrank.order import ranked
from imgrank.review import queues
from imgrank.store.cues import store_cues
from imgrank.store.db import get_setting, open_db, set_setting, to_blob
from imgrank.store.labels import set_label

pytest.importorskip("sklearn")  # the `train` extra, which `dev` includes: CI runs these

SHOTS = 4
LABELLED = 6  # bursts the owner sorted (keeper.MIN_GROUPS needs 5)
NEW = (6, 7)  # bursts nobody labelled


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def library(tmp_path, groups: int = 8, seed: int = 0) -> dict:
    """Bursts of four real JPEG files, ~0.99 apart, in the store as a scan and a head leave them.

    In every burst shot 0 is the sharpest (the cue `sharpness`) and the smallest file; shot 1 has
    the lowest deletion score (today's keeper), shot 3 the largest file (Immich's)."""
    db = open_db()
    rng = np.random.default_rng(seed)
    root = tmp_path / "photos"
    root.mkdir()
    model = config.model_name()
    set_setting(db, "embed_model", model)
    db.execute("INSERT INTO roots (path, added_at) VALUES (?, 0)", [str(root)])
    shots = {}
    for g in range(groups):
        centre = unit(rng.normal(size=32))
        for i in range(SHOTS):
            sha = f"{g * SHOTS + i:064x}"
            path = root / f"burst{g}-{i}.jpg"
            Image.new("RGB", (40, 30), (30 * i, 20 * g, 90)).save(path)
            with open(path, "ab") as f:  # the camera's bytes: the sharpest happens to be smallest
                f.write(b"\0" * (1000 * (i + 1) + int(rng.integers(0, 500))))
            vector = unit(centre + rng.normal(0, 0.05 / np.sqrt(32), size=32))
            score = {0: 0.8, 1: 0.1, 2: 0.5, 3: 0.6}[i] + 0.01 * g
            db.execute(
                "INSERT INTO files (path, root_id, sha256, state, size, mtime_ns, width, height) "
                "VALUES (?, 1, ?, 'ok', ?, ?, 4000, 3000)",
                [str(path), sha, path.stat().st_size, path.stat().st_mtime_ns],
            )
            db.execute("INSERT INTO vectors VALUES (?, ?, ?, ?)", [sha, model, 32, to_blob(vector)])
            db.execute("INSERT INTO scores VALUES (?, 1, ?, 0)", [sha, score])
            sharp = 400.0 if i == 0 else float(rng.uniform(20, 60))
            store_cues(db, [(sha, {"sharpness": sharp, "dark": 0.0, "bright": 0.0, "mean": 120.0})])
            shots[(g, i)] = (str(path), sha)
    return shots


def owner_sorts(db, shots, groups=range(LABELLED), source: str = "user") -> None:
    """The owner keeps the sharpest shot of each burst and deletes the others."""
    for g in groups:
        for i in range(SHOTS):
            path, sha = shots[(g, i)]
            if i == 0 and source == "user":
                set_label(db, sha, "keep", source, path)
            elif i:
                set_label(db, sha, "delete", source, path)


def keepers(listing: list[dict]) -> dict[str, str]:
    """The keeper's file name per group, the group named by its first shot's burst."""
    out = {}
    for g in listing:
        names = sorted(os.path.basename(p["path"]) for p in g["photos"])
        out[names[0].split("-")[0]] = next(os.path.basename(p["path"]) for p in g["photos"] if p["keeper"])
    return out


def dupes_json() -> list[dict]:
    result = CliRunner().invoke(cli, ["dupes", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    return json.loads(result.output)


def test_the_keeper_follows_the_owner_not_the_largest_file_nor_the_lowest_score(tmp_path):
    shots = library(tmp_path)
    db = open_db()
    owner_sorts(db, shots)

    groups = dupes_json()
    found = keepers(groups)
    assert len(found) == 8
    for g in NEW:  # never labelled: the sharpest, smaller than the largest, scored as least wanted
        assert found[f"burst{g}"] == f"burst{g}-0.jpg"
    assert all(g["keeper_by"] == "learned" for g in groups)
    learned = dupes.stored_keeper(db)
    assert learned.groups == LABELLED and learned.pairs == LABELLED * (SHOTS - 1)
    assert learned.w_facts[keeper.FACTS.index("sharpness")] > 0

    text = CliRunner().invoke(cli, ["dupes"])
    assert text.exit_code == 0 and "burst keepers: learned from your 18 choices in 6 bursts" in text.output
    assert f"keep  0.860  {shots[(6, 0)][0]}" in text.output  # the keeper keeps its own score


def test_the_order_puts_each_learned_keeper_after_the_rest_of_its_burst(tmp_path):
    shots = library(tmp_path)
    db = open_db()
    owner_sorts(db, shots)
    assert dupes_json()

    position = {r.path: i for i, r in enumerate(ranked(db))}
    for g in NEW:
        kept, *others = [shots[(g, i)][0] for i in range(SHOTS)]
        assert all(position[o] < position[kept] for o in others)  # deleted first, the keeper last

    result = CliRunner().invoke(cli, ["order"])
    assert result.exit_code == 0 and result.exception is None, result.output
    mtime = {path: os.stat(path).st_mtime_ns for path, _ in shots.values()}
    for g in NEW:  # a viewer sorted newest first shows the other shots before the keeper
        kept, *others = [shots[(g, i)][0] for i in range(SHOTS)]
        assert all(mtime[o] > mtime[kept] for o in others)


def test_the_bursts_queue_and_the_report_mark_the_learned_keeper(tmp_path):
    shots = library(tmp_path)
    db = open_db()
    owner_sorts(db, shots)
    assert dupes_json()

    items = queues.queue(db, "bursts", 60)
    marked = {i["name"] for i in items if i["keeper"]}
    assert {f"burst{g}-0.jpg" for g in NEW} <= marked and not {f"burst{g}-1.jpg" for g in NEW} & marked

    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0 and result.exception is None, result.output
    page = out.read_text().split("<h2>Bursts", 1)[1].split("<h2>", 1)[0]
    for g in NEW:
        tile = page.split(f">burst{g}-0.jpg</div>", 1)[1].split("</div>", 1)[0]
        assert "keeper, as you choose" in tile
        tile = page.split(f">burst{g}-1.jpg</div>", 1)[1].split("</div>", 1)[0]
        assert "keeper" not in tile


def test_shots_deleted_in_the_viewer_teach_the_keeper_the_ones_left_were_kept(tmp_path):
    """No keep labels at all: the daemon saw the owner delete three shots of each sorted burst."""
    shots = library(tmp_path)
    db = open_db()
    owner_sorts(db, shots, source="deleted")
    for g in range(LABELLED):
        for i in range(1, SHOTS):
            path = shots[(g, i)][0]
            os.unlink(path)
            db.execute("UPDATE files SET state = 'missing' WHERE path = ?", [path])

    found = keepers(dupes_json())
    for g in NEW:
        assert found[f"burst{g}"] == f"burst{g}-0.jpg"
    assert dupes.stored_keeper(db).pairs == LABELLED * (SHOTS - 1)


def test_with_too_few_sorted_bursts_the_lowest_score_stays_the_keeper(tmp_path):
    shots = library(tmp_path)
    db = open_db()
    owner_sorts(db, shots, groups=range(keeper.MIN_GROUPS - 1))

    groups = dupes_json()
    for g in NEW:
        assert keepers(groups)[f"burst{g}"] == f"burst{g}-1.jpg"  # the lowest deletion score
    assert all(g["keeper_by"] == "score" for g in groups)
    assert get_setting(db, dupes.KEEPER) == "null" and dupes.stored_keeper(db) is None
    text = CliRunner().invoke(cli, ["dupes"]).output
    assert "burst keepers: the lowest deletion score (12 choices in 4 bursts of yours so far" in text

    owner_sorts(db, shots)  # enough now...
    assert keepers(dupes_json())["burst6"] == "burst6-0.jpg"
    for g in range(LABELLED):  # ...and the labels taken back: the keeper learned from them goes too
        for i in range(SHOTS):
            set_label(db, shots[(g, i)][1], None, "user")
    assert keepers(dupes_json())["burst6"] == "burst6-1.jpg"
    position = {r.path: i for i, r in enumerate(ranked(db))}
    assert position[shots[(6, 1)][0]] == max(position[shots[(6, i)][0]] for i in range(SHOTS))


def test_pairs_are_every_kept_shot_over_every_deleted_one_of_the_same_group_only():
    group = np.array([0, 0, 0, 1, 1, -1, 2])
    kept = np.array([1, 0, 0, 1, 0, 1, 1], dtype=bool)
    deleted = np.array([0, 1, 1, 0, 1, 0, 0], dtype=bool)
    winners, losers = keeper.preferences(group, kept, deleted)
    assert sorted(zip(winners.tolist(), losers.tolist(), strict=True)) == [(0, 1), (0, 2), (3, 4)]


def test_a_learned_keeper_round_trips_as_plain_numbers_and_a_damaged_one_is_none():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(8), 3)
    image = rng.normal(size=(24, 8))
    fact = rng.normal(size=(24, len(keeper.FACTS)))
    fact[::3, 2] += 3  # the first of each group is the sharpest: the one kept
    winners, losers = keeper.preferences(group, np.arange(24) % 3 == 0, np.arange(24) % 3 != 0)
    learned = keeper.fit(image, fact, winners, losers, group[winners])
    again = keeper.Keeper.from_json(learned.to_json())
    assert again == learned
    u = again.utility(image, fact, group)
    assert (keeper.keepers(group, u, np.zeros(24))[::3] == np.arange(0, 24, 3)).all()
    assert keeper.fit(image, fact, winners[:4], losers[:4], group[winners][:4]) is None  # 2 groups
    assert keeper.Keeper.from_json('{"w_image": [1]}') is None
    assert keeper.Keeper.from_json(learned.to_json().replace("0", "NaN", 1)) is None


def test_train_learns_the_keeper_and_the_order_applies_it_without_scikit_learn(tmp_path, home):
    """`train` (what the daemon's retraining runs) learns the keeper from the same labels; a scan or
    the daemon regroups (dupes.refresh) and the order follows it in a process that never imports
    scikit-learn or torch."""
    pytest.importorskip("torch")
    shots = library(tmp_path, groups=20)
    db = open_db()
    owner_sorts(db, shots, groups=[*range(LABELLED), *range(8, 20)])  # enough for the head too
    result = CliRunner().invoke(cli, ["train", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(result.output)["keeper"] == {"groups": 18, "pairs": 54, "learned": True, "needed": 5}
    dupes.refresh(db)

    code = (
        "import json, sys; from imgrank.store.db import open_db; from imgrank.ranking import ranked; "
        "rows = [r.path for r in ranked(open_db())]; "
        "print(json.dumps([rows, [m for m in ('sklearn', 'torch') if m in sys.modules]]))"
    )
    out = run_python(code, home)
    assert out.returncode == 0, out.stderr
    rows, imported = json.loads(out.stdout)
    assert imported == []
    position = {path: i for i, path in enumerate(rows)}
    for g in NEW:
        kept, *others = [shots[(g, i)][0] for i in range(SHOTS)]
        assert all(position[o] < position[kept] for o in others)


def test_a_head_trained_elsewhere_brings_the_learned_keeper_with_its_import(tmp_path, monkeypatch, home):
    """The remote flow (`export`, `train --data` on another machine, `model import` here) ends with
    the keeper learned from this store's labels, as `train` here would: before, a remotely trained
    head left bursts at the lowest score until `dupes` or `train` ran locally."""
    pytest.importorskip("torch")
    shots = library(tmp_path, groups=20)
    db = open_db()
    owner_sorts(db, shots, groups=[*range(LABELLED), *range(8, 20)])
    data, head = tmp_path / "labels.parquet", tmp_path / "head.safetensors"
    result = CliRunner().invoke(cli, ["export", str(data)])
    assert result.exit_code == 0 and result.exception is None, result.output
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "gpu-box"))  # elsewhere: no store at all
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(head)])
    assert result.exit_code == 0 and result.exception is None, result.output
    monkeypatch.setenv("IMGRANK_HOME", str(home))
    assert get_setting(db, "keeper") is None  # nothing here has learned it yet

    result = CliRunner().invoke(cli, ["model", "import", str(head)])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "burst keepers: learned from your 54 choices in 18 bursts" in result.output
    assert get_setting(db, "keeper") is not None
    dupes.refresh(db)  # what a scan or the daemon does next; `dupes` itself would learn it again
    position = {row.path: i for i, row in enumerate(ranked(db))}
    for g in NEW:  # bursts nobody sorted: the sharp shot is kept, after the rest of its burst
        kept, *others = [shots[(g, i)][0] for i in range(SHOTS)]
        assert all(position[o] < position[kept] for o in others)
