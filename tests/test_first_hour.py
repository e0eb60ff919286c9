"""A newcomer's first hour (issue 24): decoding never blames a photo for imgrank's own failure, and
the model a store was built with is remembered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from images import photo

from imgrank import index
from imgrank.cli import cli
from imgrank.store.db import open_db

CONSOLE_SCRIPT = Path(sys.executable).with_name("imgrank")


def run(*args):
    return CliRunner().invoke(cli, list(args))


def _env(**more) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, **more}


# What a folder named `imgrank` in the working directory can hold: a clone of imgrank (no
# __init__.py at its top: Python takes it for a namespace package), or some other package.
NOT_IMGRANK = {"clone": None, "package": "# some other package named imgrank\n"}


@pytest.mark.skipif(not CONSOLE_SCRIPT.is_file(), reason="needs the installed `imgrank` command")
@pytest.mark.parametrize("holding", sorted(NOT_IMGRANK))
def test_a_scan_run_from_a_folder_holding_an_imgrank_folder_reads_every_photo(tmp_path, model_env, holding):
    """The clone at ~/imgrank, the command run from ~: the decoding processes must import the
    installed imgrank, not the folder in the working directory (every photo was 'unreadable')."""
    parent = tmp_path / "home"
    (parent / "imgrank" / "imgrank").mkdir(parents=True)
    if NOT_IMGRANK[holding] is not None:
        (parent / "imgrank" / "__init__.py").write_text(NOT_IMGRANK[holding])
    root = tmp_path / "photos"
    for i in range(6):
        photo(root / f"p{i}.jpg", seed=i)
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "scan", str(root), "--json", "--jobs", "2"],
        cwd=parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["unreadable"] == 0 and summary["embedded"] == 6, proc.stdout
    assert index.unreadable(open_db()) == []


# The scan's process imports imgrank; then PYTHONPATH names a folder whose sitecustomize.py makes
# `import imgrank` fail in every process started after: the decoding processes, and only them.
BROKEN_WORKERS = """
import os, sys
from imgrank.cli import cli
os.environ["PYTHONPATH"] = sys.argv[1]
cli(["scan", sys.argv[2], "--jobs", "2"])
"""


def test_workers_that_cannot_import_imgrank_stop_the_scan_and_record_nothing(tmp_path, model_env):
    broken = tmp_path / "broken"
    broken.mkdir()  # a broken install: `import imgrank` fails
    (broken / "sitecustomize.py").write_text("import sys\nsys.modules['imgrank'] = None\n")
    root = tmp_path / "photos"
    for i in range(4):
        photo(root / f"p{i}.jpg", seed=i)
    proc = subprocess.run(
        [sys.executable, "-c", BROKEN_WORKERS, str(broken), str(root)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: imgrank's decoding processes do not start"), proc.stderr
    db = open_db()
    assert index.unreadable(db) == [] and index.rows(db) == {}


def test_an_internal_failure_on_a_file_is_imgranks_and_is_retried(tmp_path, model_env, monkeypatch):
    """A bug of imgrank's on one file (here: the preprocessing raises) is recorded as imgrank's
    failure, not the file's; the next scan reads it again, and `status --unreadable` says which is which."""
    from imgrank import workers

    root = tmp_path / "photos"
    photo(root / "fine.jpg", seed=1)
    odd = root / "odd.jpg"
    (root / "bad.jpg").write_bytes(b"not a jpeg at all")
    photo(odd, seed=2, size=(48, 32))
    real = workers.preprocess_image

    def buggy(img):
        if img.size == (48, 32):
            raise ValueError("a bug")
        return real(img)

    monkeypatch.setattr(workers, "preprocess_image", buggy)
    first = index.scan(open_db(), [root], _embedder(), jobs=0)
    assert first.unreadable == 2 and first.embedded == 1
    causes = {Path(r["path"]).name: r["cause"] for r in index.unreadable(open_db())}
    assert causes == {"bad.jpg": "file", "odd.jpg": "imgrank"}
    listing = run("status", "--unreadable")
    assert listing.exit_code == 0, listing.output
    assert listing.output.index("the file is bad") < listing.output.index("bad.jpg")
    assert listing.output.index("imgrank failed on it") < listing.output.index("odd.jpg")
    assert listing.output.index("bad.jpg") < listing.output.index("imgrank failed on it")

    monkeypatch.setattr(workers, "preprocess_image", real)  # the bug fixed: the next scan reads it
    again = index.scan(open_db(), [root], _embedder(), jobs=0)
    assert again.embedded == 1 and again.unreadable == 1
    # The file's own failure is read again only when asked (e.g. after installing a decoder).
    retried = run("scan", str(root), "--retry-unreadable", "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["unreadable"] == 1


def _embedder():
    from imgrank.embed import load_embedder

    return load_embedder(os.environ["IMGRANK_MODEL"])


def test_score_after_scan_with_model_directory_uses_that_model(tmp_path, tiny_model, monkeypatch):
    """`scan --model DIR` once: the store remembers DIR, so `score`, a plain `scan` and `top` work
    without the hub (there is no internet in the tests: the default model cannot load)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "photos"
    for i in range(5):
        photo(root / f"p{i}.jpg", seed=i)
    first = run("scan", str(root), "--model", str(tiny_model), "--jobs", "1", "--json")
    assert first.exit_code == 0, first.output
    assert "not scored" not in first.output
    assert json.loads(first.stdout)["scored"] == 5
    score = run("score", "--json")
    assert score.exit_code == 0, score.output
    assert json.loads(score.stdout)["scored"] == 5
    photo(root / "new.jpg", seed=9)
    plain = run("scan", "--json")
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["embedded"] == 1
    top = run("top", "-n", "3")
    assert top.exit_code == 0 and len(top.stdout.splitlines()) >= 3, top.output


def test_score_takes_model(tmp_path, tiny_model, monkeypatch):
    """`score --model DIR` loads that model for the prior's prompts (the prompts' cache is gone)."""
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "photos"
    for i in range(3):
        photo(root / f"p{i}.jpg", seed=i)
    assert run("scan", str(root), "--model", str(tiny_model), "--jobs", "1").exit_code == 0
    shutil.rmtree(Path(os.environ["IMGRANK_HOME"]) / "prior")
    result = run("score", "--model", str(tiny_model), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scored"] == 3


def test_the_offline_message_names_the_three_ways_to_get_a_model(monkeypatch, tmp_path):
    from imgrank.embed import load_embedder
    from imgrank.errors import ModelError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError) as e:
        load_embedder("unum-cloud/uform3-image-text-english-small")
    message = str(e.value)
    assert "\n" not in message
    assert "internet" in message
    assert "huggingface-cli download unum-cloud/uform3-image-text-english-small --local-dir DIR" in message
    assert "IMGRANK_MODEL" in message


def test_a_first_scan_reads_the_newest_first_and_orders_once_enough_are_embedded(
    tmp_path, model_env, monkeypatch
):
    """`scan --order` on a folder bigger than the first batch: the newest photos are embedded first,
    and they are ordered (scored by the prior) while the scan goes on; at the end, all of them."""
    from imgrank import first_order
    from imgrank.store import owntimes

    monkeypatch.setattr(first_order, "FIRST_ORDER_AFTER", 40)
    root = tmp_path / "photos"
    paths = [photo(root / f"y{i // 30}" / f"p{i:03d}.jpg", seed=i, size=(64, 48)) for i in range(120)]
    for i, p in enumerate(paths):  # p000 is the oldest, p119 the newest
        os.utime(p, ns=(1_600_000_000_000_000_000 + i * 10**12,) * 2)
    seen = []
    real = first_order.FirstOrder.__call__

    def watching(self, embedded):
        before = self.seconds
        real(self, embedded)
        if before is None and self.seconds is not None:  # it just ran: which photos did it order?
            seen.extend(owntimes.records_of(open_db(), list(map(str, paths))))

    monkeypatch.setattr(first_order.FirstOrder, "__call__", watching)
    result = run("scan", str(root), "--order", "--jobs", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 120 and summary["ordered"] == 120
    assert "first_order_seconds" in summary and "first order:" in result.stderr
    first = {Path(p).name for p in seen}
    assert 40 <= len(first) < 120  # ordered mid-scan: the first batches, not all
    newest = {p.name for p in paths[-len(first) :]}
    assert first == newest  # and those were the newest photos
