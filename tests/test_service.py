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
    assert f'"{pictures}"' in unit_lines(text, "BindPaths") and f'"{home}"' in unit_lines(text, "BindPaths")
    for setting in ("Restart=on-failure", "Nice=10", "IOSchedulingClass=idle", "NoNewPrivileges=yes"):
        assert setting in text.splitlines()
    assert "ProtectSystem=strict" in text and "ProtectHome=tmpfs" in text


def test_install_without_roots_uses_the_remembered_ones_and_refuses_when_there_are_none(
    config_home, pictures
):
    result = CliRunner().invoke(cli, ["service", "install"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception
    assert "no photo folders" in result.output
    from imgrank import index
    from imgrank.store.db import open_db

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
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception
    assert "Failed to connect to bus" in result.output


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


@pytest.mark.parametrize(
    "name", ["a\nExecStartPre=/bin/touch /tmp/pwned", "tab\there", "cr\rhere", "bell\x07"]
)
def test_a_root_with_a_control_character_is_refused_and_nothing_is_injected(config_home, tmp_path, name):
    root = tmp_path / name
    root.mkdir(parents=True)
    result = CliRunner().invoke(cli, ["service", "install", str(root)])
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "control character" in result.output and "Traceback" not in result.output
    assert not (config_home / "systemd" / "user" / "imgrank-watch.service").exists()
    with pytest.raises(service.ImgrankError):
        service.render_unit([root], home=tmp_path / "home", exec_args=["/bin/true"])


def test_a_newline_in_the_model_or_home_is_refused_too(config_home, pictures, tmp_path):
    with pytest.raises(service.ImgrankError, match="control character"):
        service.render_unit([pictures], home=tmp_path / "home", model="m\nExecStartPre=/bin/sh")
    with pytest.raises(service.ImgrankError, match="control character"):
        service.render_unit([pictures], home=tmp_path / "h\nExecStartPre=/bin/sh")


def test_a_root_that_is_not_utf8_is_refused(config_home, tmp_path):
    root = tmp_path / os.fsdecode(b"caf\xe9")
    root.mkdir()
    result = CliRunner().invoke(cli, ["service", "install", str(root)])
    assert result.exit_code == 1 and "not valid UTF-8" in result.output


@pytest.mark.parametrize("name", ['odd $HOME %h "quoted" back\\slash', "100%"])
def test_odd_but_legal_characters_are_quoted_into_one_word(config_home, tmp_path, name):
    root = tmp_path / name
    root.mkdir()
    text = service.render_unit([root], home=tmp_path / "home", exec_args=["/bin/true"])
    assert len([line for line in text.splitlines() if line.startswith("ExecStart")]) == 1
    if SYSTEMD_ANALYZE:
        unit = tmp_path / "imgrank-watch.service"
        unit.write_text(text)
        proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


HARDENING = [
    "NoNewPrivileges=yes", "PrivateDevices=yes", "ProtectSystem=strict", "ProtectHome=tmpfs",
    "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes", "RestrictNamespaces=yes",
    "RestrictRealtime=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
    "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
    "RestrictAddressFamilies=AF_UNIX", "IPAddressDeny=any", "MemoryMax=4G",
]  # fmt: skip


def test_the_unit_is_sandboxed(config_home, pictures):
    text = service.render_unit([pictures])
    assert set(HARDENING) <= set(text.splitlines())


def _offline_security(unit: Path) -> float | None:
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
    return float(line.split(":")[1].split()[0]) if "exposure level" in line else None


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_rates_the_unit_well_sandboxed(tmp_path):
    """`systemd-analyze security` (offline, as a system unit: it counts User= against us, which a
    user unit cannot set) rated the first unit 9.0 of 10, "UNSAFE"; the one with ProtectHome=read-only
    and the network 1.6; this one (home folders a tmpfs, local sockets only) 1.1 (systemd 252)."""
    unit = tmp_path / "imgrank-watch.service"
    unit.write_text(service.example_unit().replace("%h/.local/bin/imgrank", "/bin/true"))
    exposure = _offline_security(unit)
    if exposure is None:
        pytest.skip("this systemd-analyze has no offline security check")
    assert exposure <= 1.1


def verify(unit: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a word about it (a setting it could not
    parse is only a warning: "Failed to extract first word, ignoring")."""
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert unit.name not in proc.stderr, proc.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_roots_and_a_home_with_apostrophes_are_quoted_and_verify(config_home, tmp_path, monkeypatch):
    """`Mum's` and `Dad's` once opened a quote that never closed: `Unbalanced quoting`, and both
    folders' ReadWritePaths ignored (the daemon could not set their times)."""
    roots = [tmp_path / "Mum's", tmp_path / "Dad's photos"]
    for root in roots:
        root.mkdir()
    home = tmp_path / "Gran's imgrank"
    monkeypatch.setenv("IMGRANK_HOME", str(home))
    result = CliRunner().invoke(cli, ["service", "install", *map(str, roots)])
    assert result.exit_code == 0 and result.exception is None, result.output
    unit = config_home / "systemd" / "user" / "imgrank-watch.service"
    text = unit.read_text()
    verify(unit)
    assert unit_lines(text, "ExecStart")[0].endswith(f'watch "{roots[0]}" "{roots[1]}"')
    assert unit_lines(text, "BindPaths")[:3] == [f'"{roots[0]}"', f'"{roots[1]}"', f'"{home}"']
    assert f'"IMGRANK_HOME={home}"' in unit_lines(text, "Environment")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_a_colon_in_a_root_does_not_split_its_bind_mount(tmp_path):
    """BindPaths=SOURCE:DEST: a colon in a folder's name is escaped inside its quotes."""
    root = tmp_path / "2024: holiday"
    root.mkdir()
    text = service.render_unit([root], home=tmp_path / "home", exec_args=["/bin/true"])
    assert f'"{str(root).replace(":", chr(92) + ":")}"' in unit_lines(text, "BindPaths")
    unit = tmp_path / "imgrank-watch.service"
    unit.write_text(text)
    verify(unit)


def test_home_folders_are_hidden_and_this_imgrank_is_bound_back_read_only(tmp_path):
    """ProtectHome=tmpfs: ~/.ssh and the rest of every home are an empty tmpfs to the daemon. What
    it runs from, if that is under a home (a venv in ~, pyenv's Python), comes back read-only."""
    roots = [Path("/home/me/Pictures")]
    installed = [Path("/home/me/venvs/imgrank"), Path("/usr"), Path("/home/me/Pictures/tools")]
    text = service.render_unit(roots, home=Path("/home/me/.config/imgrank"), exec_args=["/bin/true"],
                               installed=installed)  # fmt: skip
    assert "ProtectHome=tmpfs" in text.splitlines()
    assert unit_lines(text, "BindReadOnlyPaths") == ['"/home/me/venvs/imgrank"']  # /usr is not hidden
    settings = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "ReadWritePaths" not in settings and ".ssh" not in settings
    assert "Environment=HF_HUB_OFFLINE=1" in text.splitlines()  # no network: the model from its cache


def test_installed_paths_are_where_this_python_and_imgrank_are():
    import sys

    import imgrank

    paths = service.installed_paths()
    for p in (sys.prefix, sys.base_prefix, Path(imgrank.__file__).parent):
        assert any(Path(os.path.realpath(p)) == q or q in Path(os.path.realpath(p)).parents for q in paths), p
