"""Private stays private: the home is 0700 and ours, what imgrank writes is 0600 in 0700 folders,
and a link planted where imgrank writes is replaced, never written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import separable, store
from images import photo

from imgrank.cli import cli
from imgrank.store.db import open_db

FOREIGN_UID = 4242  # a user that is not us


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0 and result.exception is None, result.output
    return result


def refused(*args) -> str:
    """The one line a refused command prints (and that it was refused, not crashed)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def umask_022():
    """The usual umask, under which plain open() and mkdir() make 0644 files and 0755 folders."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_everything_imgrank_writes_is_0600_in_0700_folders(tmp_path, home, model_env, umask_022):
    # A home and a thumbnail folder as an older imgrank left them: readable by everyone.
    (home / "thumbs").mkdir(parents=True, mode=0o755)
    os.chmod(home, 0o755)
    root = tmp_path / "photos"
    for i in range(10):
        photo(root / "delete" / f"IMG_{i:03d}.jpg", seed=i)
        photo(root / "keep" / f"DSC_{i:03d}.jpg", seed=100 + i)
    invoke("scan", str(root))
    invoke("relabel", "delete", str(root / "delete"))
    invoke("relabel", "keep", str(root / "keep"))
    invoke("train", "--epochs", "5")
    out = tmp_path / "out"
    out.mkdir()
    invoke("export", str(out / "labels.parquet"))
    invoke("export-vectors", str(out / "vectors.parquet"))
    invoke("report", "--out", str(out / "report.html"))

    assert mode(home) == 0o700
    written = {p.relative_to(home).parts[0] for p in home.rglob("*") if p.is_file()}
    assert {"thumbs", "prior", "heads", "imgrank.db"} <= written, written
    for p in home.rglob("*"):
        assert mode(p) == (0o700 if p.is_dir() else 0o600), f"{p}: {mode(p):04o}"
    for name in ("labels.parquet", "vectors.parquet", "report.html"):
        assert mode(out / name) == 0o600, name


def test_a_home_others_can_read_is_made_0700_at_every_start(home):
    invoke("status")
    assert mode(home) == 0o700
    os.chmod(home, 0o750)
    invoke("status")
    assert mode(home) == 0o700


@pytest.mark.parametrize("bits", [0o770, 0o777, 0o1777])
def test_a_home_others_can_write_to_is_refused(home, bits):
    home.mkdir()
    os.chmod(home, bits)
    line = refused("status")
    assert f"imgrank home {home} is writable by other users" in line and "--home" in line
    assert not (home / "imgrank.db").exists()


def test_a_home_inside_a_folder_others_can_write_to_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could rename our home away and put theirs in its place
    monkeypatch.setenv("IMGRANK_HOME", str(shared / "imgrank"))
    line = refused("status")
    assert f"is inside {shared}, which is writable by other users" in line
    os.chmod(shared, 0o1777)  # like /tmp: the sticky bit keeps what is ours ours
    invoke("status")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")


@needs_root
def test_a_home_another_user_owns_is_refused_and_its_planted_prompts_unused(home):
    home.mkdir(mode=0o700)
    (home / "prompts.txt").write_text("delete: a photo\nkeep: another photo\n")  # planted
    os.chown(home, FOREIGN_UID, FOREIGN_UID)
    line = refused("status")
    assert line == (
        f"Error: imgrank home {home} belongs to another user (uid {FOREIGN_UID}): "
        "give a folder of your own with --home"
    )
    assert not (home / "imgrank.db").exists()
    assert refused("scan", str(home)).endswith("give a folder of your own with --home")


@needs_root
def test_a_home_in_a_folder_another_user_owns_is_refused(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, FOREIGN_UID, FOREIGN_UID)
    monkeypatch.setenv("IMGRANK_HOME", str(theirs / "imgrank"))
    line = refused("status")
    assert f"is inside {theirs}, which belongs to another user (uid {FOREIGN_UID})" in line


def test_a_link_planted_at_the_next_heads_json_is_replaced_not_written_through(tmp_path, home):
    victim = tmp_path / "todo.txt"
    victim.write_text("buy milk\n")
    heads = home / "heads"
    heads.mkdir(parents=True, mode=0o700)
    os.symlink(victim, heads / "head-1.json")
    os.symlink(tmp_path / "created-through-link", heads / "head-1.safetensors")
    db = open_db()
    x, y = separable(120, seed=3)
    store(db, x, y)
    invoke("train", "--epochs", "5")
    assert victim.read_text() == "buy milk\n"
    assert not (tmp_path / "created-through-link").exists()
    for name in ("head-1.json", "head-1.safetensors"):
        assert stat.S_ISREG(os.lstat(heads / name).st_mode) and mode(heads / name) == 0o600


def test_a_link_planted_at_a_report_or_export_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "todo.txt"
    victim.write_text("buy milk\n")
    db = open_db()
    x, y = separable(60, seed=4)
    store(db, x, y)
    for command in ("export", "report"):
        out = tmp_path / f"{command}.out"
        os.symlink(victim, out)
        invoke(command, str(out)) if command == "export" else invoke(command, "--out", str(out))
        assert not out.is_symlink() and mode(out) == 0o600
    assert victim.read_text() == "buy milk\n"


def test_a_link_where_a_folder_of_imgranks_should_be_is_refused(tmp_path, home):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home.mkdir(mode=0o700)
    os.symlink(elsewhere, home / "heads")
    db = open_db()
    x, y = separable(120, seed=3)
    store(db, x, y)
    line = refused("-q", "train", "--epochs", "5")
    assert "heads should be a folder of imgrank's, but is a link or a file" in line
    assert list(elsewhere.iterdir()) == []


def test_the_retraining_log_is_0600_and_a_link_planted_there_is_replaced(tmp_path, home, umask_022):
    from imgrank.daemon.retrain import start_low_priority

    victim = tmp_path / "todo.txt"
    victim.write_text("buy milk\n")
    home.mkdir(mode=0o700)
    log = home / "train.log"
    os.symlink(victim, log)
    child = start_low_priority(["sh", "-c", "echo trained"], log)
    assert child.wait(timeout=30) == 0
    assert victim.read_text() == "buy milk\n"
    assert not log.is_symlink() and mode(log) == 0o600 and log.read_text() == "trained\n"


def test_a_link_planted_for_thumbs_gets_nothing_and_the_scan_goes_on(tmp_path, home, model_env):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home.mkdir(mode=0o700)
    os.symlink(elsewhere, home / "thumbs")
    photo(tmp_path / "photos" / "a.jpg", seed=1)
    result = invoke("scan", "--json", str(tmp_path / "photos"))
    assert '"embedded": 1' in result.stdout
    assert list(elsewhere.iterdir()) == []


def test_a_home_reached_through_a_link_in_a_folder_others_can_write_to_is_refused(tmp_path, monkeypatch):
    """Whoever can write the link's folder can point the link at a home of theirs."""
    real = tmp_path / "real-home"
    real.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    os.symlink(real, shared / "imgrank")
    monkeypatch.setenv("IMGRANK_HOME", str(shared / "imgrank"))
    assert f"is inside {shared}, which is writable by other users" in refused("status")
    monkeypatch.setenv("IMGRANK_HOME", str(real))
    invoke("status")
