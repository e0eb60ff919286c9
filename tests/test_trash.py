"""`imgrank trash`: photos go to the desktop Trash (never unlinked), each move logged, `--undo` puts
the last batch back; `top`/`labels` print paths for pipes; the daemon takes these deletions as its own.

The trash runs in real `imgrank` processes with HOME and XDG_DATA_HOME in tmp_path, so the
freedesktop Trash they use is the test's own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from images import photo

from imgrank.cli import cli
from imgrank.store.db import open_db
from imgrank.store.labels import current_labels, history

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="checks the freedesktop Trash")


def run(*args):
    return CliRunner().invoke(cli, list(args))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def desktop(tmp_path, model_env):
    """A home with its own Trash, and a scanned folder of 5 photos, 2 labelled delete."""
    home = tmp_path / "home"
    (home / ".local" / "share").mkdir(parents=True)
    root = tmp_path / "photos"
    paths = [photo(root / ("sub" if i % 2 else "") / f"p{i}.jpg", seed=i) for i in range(5)]
    assert run("scan", str(root), "--jobs", "1").exit_code == 0
    assert run("relabel", "delete", str(paths[1]), str(paths[2])).exit_code == 0
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}

    def imgrank(*args, check=True):
        proc = subprocess.run(
            [sys.executable, "-m", "imgrank", *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    return paths, home / ".local" / "share" / "Trash", imgrank


def test_labelled_delete_goes_to_the_trash_and_undo_puts_it_back(desktop):
    paths, trash, imgrank = desktop
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in paths}
    dry = imgrank("trash", "--labelled", "delete", "--dry-run")
    assert dry.stdout.splitlines() == sorted(map(str, paths[1:3]))
    assert all(p.exists() for p in paths) and not trash.exists()

    moved = imgrank("trash", "--labelled", "delete", "--json")
    assert json.loads(moved.stdout)["moved"] == sorted(map(str, paths[1:3]))
    assert not paths[1].exists() and not paths[2].exists() and paths[0].exists()
    in_trash = sorted((trash / "files").iterdir())
    assert sorted(digest(p) for p in in_trash) == sorted(before[p][0] for p in paths[1:3])
    infos = [(trash / "info" / f"{p.name}.trashinfo").read_text() for p in in_trash]
    assert sorted(line for i in infos for line in i.splitlines() if line.startswith("Path=")) == sorted(
        f"Path={p}" for p in paths[1:3]
    )

    back = imgrank("trash", "--undo")
    assert "put back 2 photos" in back.stdout
    assert {p: (digest(p), p.stat().st_mtime_ns) for p in paths} == before  # same bytes, same times
    assert list((trash / "files").iterdir()) == [] and list((trash / "info").iterdir()) == []
    labels = current_labels(open_db())
    assert sorted(labels.values()) == ["delete", "delete"]  # labels stay
    again = imgrank("trash", "--undo", check=False)
    assert again.returncode == 1 and "nothing to undo" in again.stderr


def test_top_and_labels_print_paths_for_pipes(desktop):
    paths, _, _ = desktop
    top = json.loads(run("top", "-n", "3", "--json").stdout)
    listed = run("top", "-n", "3", "--paths")
    assert listed.exit_code == 0 and listed.stdout.splitlines() == [r["path"] for r in top]
    nul = run("top", "-n", "3", "-0")
    assert nul.stdout_bytes.split(b"\0") == [os.fsencode(r["path"]) for r in top] + [b""]
    deletes = run("labels", "--paths", "--label", "delete")
    assert deletes.stdout.splitlines() == sorted(map(str, paths[1:3]))


def test_the_top_n_go_with_a_delete_label_and_the_daemon_labels_them_not_again(desktop):
    from imgrank.daemon.deletions import Judgement, apply

    paths, _, imgrank = desktop
    first = json.loads(run("top", "-n", "1", "--unlabelled", "--json").stdout)[0]
    assert run("relabel", "keep", *[str(p) for p in paths if str(p) != first["path"]][:1]).exit_code == 0
    gone = imgrank("trash", first["path"])
    assert "moved 1 photo to the Trash" in gone.stdout
    db = open_db()
    assert current_labels(db)[first["sha256"]] == "delete"
    rows = len(history(db, 1000))
    # The daemon sees the deletion a moment later: the photo is labelled already, by the trash.
    outcome = apply(db, Judgement(judged={first["path"]: time.time()}), learn=True)
    assert outcome.labelled == [] and len(history(db, 1000)) == rows
    # A photo the owner deletes in a viewer is still learnt from.
    other = next(p for p in paths if p.exists() and str(p) != first["path"] and p not in paths[1:3])
    other.unlink()
    outcome = apply(db, Judgement(judged={str(other): time.time()}), learn=True)
    assert outcome.labelled == [str(other)]


def test_trash_needs_one_choice_and_never_touches_a_folder(desktop, tmp_path):
    _, _, imgrank = desktop
    nothing = imgrank("trash", check=False)
    assert nothing.returncode == 2 and "--top N, --labelled delete, or PATH" in nothing.stderr
    folder = imgrank("trash", str(tmp_path / "photos" / "sub"), check=False)
    assert folder.returncode == 1 and "not a file" in folder.stderr
    assert (tmp_path / "photos" / "sub").is_dir()


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_review_pages_trash_button_asks_with_the_count_then_moves_the_deletes(desktop, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    from test_review import CHROMIUM_ARGS

    paths, trash, _ = desktop
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "home/.local/share")}
    server = subprocess.Popen(
        [sys.executable, "-m", "imgrank", "review", "--no-open"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        url = server.stdout.readline().strip()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            asked = []

            def answer(dialog):
                asked.append(dialog.message)
                dialog.dismiss() if len(asked) == 1 else dialog.accept()

            page.on("dialog", answer)
            page.goto(url)
            expect(page.locator(".tile").first).to_be_visible()
            page.get_by_role("button", name="Trash deletes").click()  # asked, and told no
            page.wait_for_timeout(500)
            expect(page.locator("#status")).not_to_contain_text("moved")
            assert asked == [
                "Move the 2 photos marked delete to the Trash? (imgrank trash --undo puts them back)"
            ]
            assert all(p.exists() for p in paths)
            page.get_by_role("button", name="Trash deletes").click()  # asked again, and told yes
            expect(page.locator("#status")).to_contain_text("moved 2 photos to the Trash")
            browser.close()
        assert not paths[1].exists() and not paths[2].exists()
        assert len(list((trash / "files").iterdir())) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)
