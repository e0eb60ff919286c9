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


ZERO = re.compile(r"(?<![\d.:-])0 (?!s\))")  # a count of zero ("0 failed"), not "10", "0.3" or "(0.0 s)"


def test_order_restore_relabel_and_score_say_no_zeros_and_json_keeps_every_count(model_env, tmp_path):
    root = tmp_path / "photos"
    paths = [photo(root / f"p{i}.jpg", seed=i) for i in range(3)]
    invoke("scan", str(root))  # scored by the prior

    def line(*args) -> str:
        text = invoke(*args).output.strip().splitlines()[-1]
        assert not ZERO.search(text), text
        return text

    assert re.fullmatch(r"ordered 3 photos: 3 mtimes set \(\d+\.\d s\)", line("order")), line("order")
    # --keep-places: the times set a moment ago stay (a plain order would lay them out from now)
    kept = "dry run: nothing would change: all 3 photos already in place"
    assert line("order", "--keep-places", "--dry-run") == kept
    assert re.fullmatch(r"ordered 3 photos: 3 already in place \(\d+\.\d s\)", line("order", "--keep-places"))
    data = json.loads(invoke("order", "--keep-places", "--json").stdout)
    assert data["touched"] == 0 and data["restored"] == 0 and data["failed"] == []
    assert line("restore") == "restored 3 mtimes"
    assert line("restore") == "nothing to restore"
    data = json.loads(invoke("restore", "--json").stdout)
    assert (data["restored"], data["already"], data["followed"], data["forgotten"]) == (0, 0, 0, 0)
    assert line("relabel", "keep", str(paths[0])) == "keep: 1 photo (1 changed)"
    assert line("relabel", "keep", str(paths[0])) == "keep: 1 photo (unchanged)"
    data = json.loads(invoke("relabel", "keep", str(paths[0]), "--json").stdout)
    assert (data["applied"], data["changed"], data["indexed"]) == (1, 0, 0)
    assert line("score") == "3 photos scored"


def test_summaries_of_restore_order_and_review_name_only_what_happened():
    from imgrank.cli_text import order_summary, relabel_summary, restore_summary, reviewed_summary
    from imgrank.order import OrderResult, RestoreResult

    assert restore_summary(RestoreResult(restored=1, already=2)) == "restored 1 mtime (2 already original)"
    assert restore_summary(RestoreResult(failed=[("a", "b")])) == "no mtime restored, 1 left alone"
    assert restore_summary(RestoreResult(followed=1, restored=1)) == "restored 1 mtime (1 found moved)"
    done = OrderResult(ordered=1, touched=1, failed=[("a", "b")], restored=2, seconds=0.04)
    assert order_summary(done) == (
        "ordered 1 photo: 1 mtime set, 2 no longer in the order given their own time back, 1 failed (0.0 s)"
    )
    assert order_summary(OrderResult(ordered=5, touched=2, in_place=3), dry_run=True) == (
        "would set 2 of 5 mtimes, 3 already in place"
    )
    assert relabel_summary(0, 0, 0, 2) == "no photos; 2 failed"
    assert relabel_summary(2, 1, 2, 0) == "2 photos (1 changed, 2 newly indexed)"
    looked = {"looked_at": 10, "kept": 1, "already_labelled": 0, "gone": 9}
    assert reviewed_summary(looked) == "1 survivor of the first 10 labelled keep (9 deleted since)"
    assert (
        reviewed_summary({**looked, "kept": 0, "gone": 10})
        == "none of the first 10 labelled keep (10 deleted since)"
    )
