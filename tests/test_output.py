"""What the owner reads: summaries in plain words (only what happened, right plurals), `top` with a
header and ranks, the daemon's line in `status`; `--json` keeps every key."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from images import photo

from imgrank.cli import cli, format_daemon_status
from imgrank.index import ScanResult
from imgrank.words import counts, names, plural, scan_summary


def invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0 and result.exception is None, result.output
    return result


def test_counts_in_plain_words():
    assert (
        plural(1, "photo") == "1 photo"
        and plural(2, "photo") == "2 photos"
        and plural(0, "photo") == "0 photos"
    )
    assert counts([(3, "new"), (0, "moved"), (470, "unchanged")]) == "3 new photos, 470 unchanged"
    assert counts([(1, "new"), (0, "moved")]) == "1 new photo"
    assert counts([(1, "indexed"), (2, "moved")], verb=True) == "1 photo indexed, 2 moved"
    assert counts([(0, "new")]) == ""
    assert names(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]) == "a.jpg, b.jpg, c.jpg and 2 more"
    assert scan_summary({"unchanged": 474, "seconds": 1.25}) == "474 unchanged photos (1.2 s)"


def test_scan_prints_only_what_happened_and_json_keeps_every_key(model_env, tmp_path):
    root = tmp_path / "photos"
    photo(root / "one.jpg", seed=1)
    first = invoke("scan", str(root)).output.strip().splitlines()[-1]
    assert re.fullmatch(r"1 new photo; 1 embedded, 1 scored \(\d+\.\d s\)", first), first
    again = invoke("scan").output.strip().splitlines()[-1]
    assert re.fullmatch(r"1 unchanged photo \(\d+\.\d s\)", again), again
    data = json.loads(invoke("scan", "--json").stdout)
    keys = set(ScanResult().as_dict()) - {"warnings"}
    assert keys | {"scored"} <= set(data) and data["new"] == 0 and data["unchanged"] == 1


def test_top_has_a_header_and_ranks_and_json_keeps_every_key(model_env, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    invoke("scan", str(root))  # scored by the prior: no head needed
    lines = invoke("top").stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["rank", "score", "label", "path"])
    rows = [line.split() for line in lines[header + 1 :]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    data = json.loads(invoke("top", "--json").stdout)
    assert [d["rank"] for d in data] == [1, 2, 3]
    assert all({"rank", "path", "score", "label"} <= set(d) for d in data)
    assert [d["path"] for d in data] == [r[-1] for r in rows]


def test_status_says_what_the_daemon_did_in_words():
    info = {
        "running": False,
        "pid": None,
        "started_at": 1.7e9,
        "heartbeat_at": 1.7e9,
        "counters": {"indexed": 1, "moved": 0, "deleted": 2, "labels": 2, "reorders": 1, "retrains": 0},
    }
    line = format_daemon_status(info)
    assert line.endswith("; 1 photo indexed, 2 deleted, 2 labels, 1 reorder"), line
    assert " 0 " not in line
    idle = format_daemon_status(dict(info, counters={}))
    assert idle.startswith("daemon: not running (last seen ") and idle.endswith(")")
