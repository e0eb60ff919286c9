"""Consistent edges (issue 24): one exit-code rule, click-validated options, --help in the order
one works, tables that line up."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from imgrank.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("command", ["train", "suspects", "dupes", "score", "top", "order", "restore"])
def test_nothing_to_do_yet_is_exit_0_with_one_line_saying_what_to_run(command):
    result = run(command)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.exception is None
    said = (result.stderr + result.stdout).strip().splitlines()
    assert len(said) == 1, said


def test_a_port_out_of_range_is_a_usage_error_not_a_traceback():
    result = run("review", "--port", "99999", "--no-open")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "0<=x<=65535" in result.output and "Traceback" not in result.output


def test_help_lists_the_commands_in_the_order_one_uses_them():
    listed = re.findall(r"^  (\S+)", run("--help").output.split("Commands:")[1], re.M)
    assert listed[:4] == ["scan", "status", "roots", "relabel"]
    for earlier, later in [("scan", "train"), ("relabel", "train"), ("train", "order"), ("order", "restore")]:
        assert listed.index(earlier) < listed.index(later)
    assert sorted(listed) == sorted(cli.commands)


def test_enable_without_a_user_manager_says_what_to_do_and_where_the_unit_is(tmp_path, monkeypatch):
    """As in a container or an ssh session without lingering: systemctl cannot reach the user bus."""
    import os

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    no_bus = "#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n"
    (bin_dir / "systemctl").write_text(no_bus)
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    result = run("service", "install", "--enable", str(pictures))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    unit = tmp_path / "config" / "systemd" / "user" / "imgrank-watch.service"
    line = result.stderr.strip().splitlines()[-1]
    assert "imgrank watch" in line and "loginctl enable-linger" in line and str(unit) in line
    assert unit.is_file()


def test_status_says_why_fewer_are_embedded_than_present(tmp_path, model_env):
    from images import photo

    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    (root / "copy.jpg").write_bytes((root / "p0.jpg").read_bytes())
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    status = run("status").stdout
    assert "images: 4 present" in status
    assert "embedded: 3 of 3 distinct photos (1 present files are exact copies of another)" in status


def test_exact_copies_are_marked_and_tiles_know_their_folder(tmp_path, model_env):
    """In a group of near-duplicates, the photo that is the same bytes as another is marked `copy`
    in `dupes` and on the review page; each tile carries its parent folder (many share a name)."""
    import json

    from images import photo

    from imgrank.review.queues import queue
    from imgrank.store.db import open_db

    root = tmp_path / "photos"
    for folder in ("trip", "phone"):
        photo(root / folder / "screenshot.jpg", seed=1 if folder == "trip" else 2)
    (root / "copy").mkdir()
    (root / "copy" / "screenshot.jpg").write_bytes((root / "trip" / "screenshot.jpg").read_bytes())
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    listed = run("dupes", "--json")
    assert listed.exit_code == 0, listed.output
    members = [p for g in json.loads(listed.stdout) for p in g["photos"]]
    assert sorted((p["keeper"], p["copy"]) for p in members) == [(False, True), (True, False)]
    text = run("dupes").stdout
    assert sum(line.lstrip().startswith("copy ") for line in text.splitlines()) == 1
    tiles = queue(open_db(), "least-wanted", 10)
    assert len(tiles) == 2 and all(t["folder"] == t["path"].split("/")[-2] for t in tiles)
    bursts = queue(open_db(), "bursts", 10)
    assert sorted(t["copy"] for t in bursts) == [False, True]


def columns(line: str) -> list[tuple[int, int]]:
    """Each column's (start, end) in a table line: cells are split by two or more spaces."""
    import re

    return [m.span() for m in re.finditer(r"\S+(?: \S+)*", line)]


def lined_up(header: str, row: str) -> bool:
    """Each cell of the row under a header column (overlapping it) starts (left-aligned) or ends
    (right-aligned) where that column does; the last column (a path) only has to start there. An
    empty cell has nothing under its column; a marker (`*`) left of every column is not a cell."""
    head, cells = columns(header), columns(row)
    for i, (hs, he) in enumerate(head):
        under = [(cs, ce) for cs, ce in cells if cs < max(he, hs + 1) and ce > hs]
        if not under:
            continue
        cs, ce = under[0]
        if cs != hs and (i == len(head) - 1 or ce != he):
            return False
    return True


def test_the_tables_line_up_under_their_headers(tmp_path):
    """`suspects`, `top` and `model list`: every row's columns start where the header's do."""
    import numpy as np
    from helpers import separable, store, unit

    from imgrank.store.db import open_db
    from imgrank.train import TrainConfig, train

    db = open_db()
    x, y = separable(60, dim=16, seed=0, margin=0.8)
    store(db, unit(x), y)
    train(db, TrainConfig(use_meta=False, max_epochs=30, min_per_class=5))
    for args in (["suspects", "-n", "5"], ["top", "-n", "5"], ["model", "list"]):
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)
        header, *rows = result.stdout.splitlines()
        assert rows, args
        for row in rows:
            assert lined_up(header, row), (args, header, row)
    assert np.isfinite(y).all()
