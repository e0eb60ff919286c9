"""`imgrank service install`: the unit it writes, checked by systemd itself where it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from imgrank import service
from imgrank.cli import cli

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    path = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(path))
    return path


@pytest.fixture
def pictures(tmp_path):
    path = tmp_path / "My Pictures"  # a space, as real folders have
    path.mkdir()
    return path


def unit_lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_install_writes_the_unit_with_this_imgrank_the_roots_and_the_environment(
    config_home, pictures, home, monkeypatch
):
    monkeypatch.setenv("IMGRANK_MODEL", "/models/tiny")
    result = CliRunner().invoke(cli, ["service", "install", str(pictures)])
    assert result.exit_code == 0, result.output
    unit = config_home / "systemd" / "user" / "imgrank-watch.service"
    text = unit.read_text()
    assert (
        "systemctl --user daemon-reload && systemctl --user enable --now imgrank-watch.service"
        in result.output
    )
    exec_start = unit_lines(text, "ExecStart")[0]
    assert exec_start.startswith(service.imgrank_command()[0])
    assert exec_start.endswith(f'watch "{pictures}"')
    assert f"IMGRANK_HOME={home}" in unit_lines(text, "Environment")
    assert "IMGRANK_MODEL=/models/tiny" in unit_lines(text, "Environment")
    assert f'"{pictures}"' in unit_lines(text, "ReadWritePaths") and str(home) in unit_lines(
        text, "ReadWritePaths"
    )
    for setting in ("Restart=on-failure", "Nice=10", "IOSchedulingClass=idle", "NoNewPrivileges=yes"):
        assert setting in text.splitlines()
    assert "ProtectSystem=strict" in text and "ProtectHome=read-only" in text


def test_install_without_roots_uses_the_remembered_ones_and_refuses_when_there_are_none(
    config_home, pictures
):
    result = CliRunner().invoke(cli, ["service", "install"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no photo folders" in result.output
    from imgrank import index
    from imgrank.db import open_db

    index.add_roots(open_db(), [pictures])
    result = CliRunner().invoke(cli, ["service", "install", "--print"])
    assert result.exit_code == 0
    assert str(pictures) in unit_lines(result.output, "ExecStart")[0]
    assert not (config_home / "systemd").exists()  # --print writes nothing


def test_enable_runs_systemctl_user(config_home, pictures, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(cli, ["service", "install", "--enable", str(pictures)])
    assert result.exit_code == 0, result.output
    assert calls.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now imgrank-watch.service",
    ]
    assert "journalctl --user -u imgrank-watch -f" in result.output


def test_a_failing_systemctl_is_one_clear_line(config_home, pictures, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(cli, ["service", "install", "--enable", str(pictures)])
    assert result.exit_code != 0
    assert "Failed to connect to bus" in result.output and "Traceback" not in result.output


def test_the_unit_in_the_repository_is_the_one_install_writes_for_the_defaults():
    assert (REPO / "systemd" / "imgrank-watch.service").read_text() == service.example_unit()


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_installed_unit(config_home, pictures):
    """`systemd-analyze verify` loads the unit as systemd would: syntax, settings, ExecStart executable.
    (`--user` needs a running user manager, which a CI container as root lacks, so it is checked as
    a system unit: the same parser and settings.)"""
    result = CliRunner().invoke(cli, ["service", "install", str(pictures)])
    assert result.exit_code == 0, result.output
    unit = config_home / "systemd" / "user" / "imgrank-watch.service"
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "imgrank-watch.service" not in proc.stderr, proc.stderr  # no warnings about our unit
