"""The systemd user unit that runs `imgrank watch`, and installing it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imgrank
from imgrank import config
from imgrank.errors import ImgrankError

UNIT_NAME = "imgrank-watch.service"
ENABLE_LINE = f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}"

UNIT = """\
[Unit]
Description=imgrank: order photos by deletion score and learn from deletions
Documentation=man:journalctl(1)

[Service]
Type=simple
ExecStart={exec_start}
{environment}Restart=on-failure
RestartSec=30
# SIGTERM: the daemon commits and exits within 5 s
TimeoutStopSec=20
# SIGTERM to the daemon only; it stops its own decoding workers and any retraining child.
KillMode=mixed
# Low CPU and IO priority: it never competes with the owner's own work.
Nice=10
CPUSchedulingPolicy=batch
IOSchedulingClass=idle
# Sandboxing that works in a user unit: everything read-only, every home folder (~/.ssh too)
# an empty tmpfs; bound back in, writable: the photo roots and the imgrank home (order rewrites
# mtimes) and ~/.cache; read-only: this imgrank's own files where they live under a home.
NoNewPrivileges=yes
PrivateTmp={private_tmp}
PrivateDevices=yes
ProtectSystem=strict
ProtectHome=tmpfs
{binds}# Kernel, clock, hostname, cgroups: nothing the daemon needs to see or change.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
PrivateMounts=yes
PrivateUsers=yes
CapabilityBoundingSet=
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# No network: local sockets only (the decoding workers' pipes). The embedding model comes from
# the cache that the first `imgrank scan` filled (HF_HUB_OFFLINE=1 above: no update check).
RestrictAddressFamilies=AF_UNIX
IPAddressDeny=any
UMask=0077
# Not MemoryDenyWriteExecute: a retraining child's torch compiles CPU kernels at run time.
# Memory: the daemon, its decoding workers and a retraining child together; above MemoryHigh
# the kernel reclaims first, at MemoryMax the OOM killer stops it (and Restart= brings it back).
MemoryHigh=3G
MemoryMax=4G
TasksMax=256

[Install]
WantedBy=default.target
"""


def _escape(value: str, command: bool = False) -> str:
    """A path as one unit-file word: % escaped ($ too in a command line), quoted if it holds spaces.

    A control character (a newline would start a new setting, e.g. an `ExecStartPre=`) or a name
    that is not UTF-8 cannot be written safely in a unit file: refused (ImgrankError)."""
    _check_unit_value(value)
    value = value.replace("%", "%%")
    if command:
        value = value.replace("$", "$$")
    if any(c in value for c in " \"'\\\t"):  # an apostrophe would open a quote
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _check_unit_value(value: str) -> None:
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ImgrankError(
            f"{value!r} holds a control character ({bad!r}), which a systemd unit cannot take: "
            "rename the folder, or run `imgrank watch` yourself"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ImgrankError(
            f"{value!r} is not valid UTF-8, which a systemd unit cannot take: rename the folder, "
            "or run `imgrank watch` yourself"
        ) from None


def render_unit(
    roots: list[Path],
    home: Path | None = None,
    exec_args: list[str] | None = None,
    model: str | None = None,
    raw: bool = False,
    installed: list[Path] | None = None,
) -> str:
    """The unit text. `raw` leaves systemd specifiers (like %h) unescaped, for the example unit.
    `installed`: the folders this imgrank runs from (default: where this Python and imgrank are)."""
    esc = (lambda s, command=False: _check_unit_value(s) or s) if raw else _escape
    bind = (lambda s: _check_unit_value(s) or s) if raw else _bind_word
    home = home or config.home_dir()
    exec_args = exec_args or imgrank_command()
    exec_start = " ".join(esc(str(a), command=True) for a in [*exec_args, "watch", *roots])
    env = [f"IMGRANK_HOME={home}", "HF_HUB_OFFLINE=1"]
    model = model if model is not None else os.environ.get("IMGRANK_MODEL")
    if model:
        env.append(f"IMGRANK_MODEL={model}")
    private_tmp = "no" if any(_under_tmp(p) for p in [*roots, home]) else "yes"  # else they'd be hidden
    environment = "".join(f"Environment={esc(e)}\n" for e in env)
    writable = [*roots, home]
    binds = "".join(f"BindPaths={bind(str(p))}\n" for p in writable)
    # the model cache, where the first scan downloaded the published weights ("-": may not exist)
    binds += "BindPaths=-%h/.cache\n"
    if installed is None:
        installed = installed_paths(model)
    hidden = [p for p in installed if _under_home(p) and not any(_inside(p, w) for w in writable)]
    binds += "".join(f"BindReadOnlyPaths={bind(str(p))}\n" for p in hidden)
    return UNIT.format(exec_start=exec_start, environment=environment, binds=binds, private_tmp=private_tmp)


def _bind_word(value: str) -> str:
    """A path as one word of BindPaths=: quoted, with `:` (its separator) and `\\` escaped."""
    _check_unit_value(value)
    value = value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"').replace(":", "\\:")
    return f'"{value}"'


def installed_paths(model: str | None = None) -> list[Path]:
    """The folders this imgrank runs from: this Python's environment and base install, imgrank's own
    package (an editable install's checkout), and a local model directory."""

    out = [Path(sys.prefix), Path(sys.base_prefix), Path(imgrank.__file__).resolve().parent]
    if model and Path(model).expanduser().is_dir():
        out.append(Path(model).expanduser())
    seen: list[Path] = []
    for p in (Path(os.path.realpath(p)) for p in out):
        if p not in seen and not any(_inside(p, s) for s in seen):
            seen = [s for s in seen if not _inside(s, p)] + [p]
    return seen


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _under_home(path: Path) -> bool:
    """Hidden by ProtectHome=tmpfs: under /home, /root or /run/user (or %h, in the example unit)."""
    return str(path).startswith("%h/") or any(
        _inside(path, Path(top)) for top in ("/home", "/root", "/run/user")
    )


def _under_tmp(path: Path) -> bool:
    return str(path) == "/tmp" or str(path).startswith("/tmp/")


def imgrank_command() -> list[str]:
    """How to run this imgrank: the script beside this Python (its venv), else on PATH, else `python -m`."""
    beside = Path(sys.executable).parent / "imgrank"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("imgrank")
    return [found] if found else [sys.executable, "-m", "imgrank"]


def example_unit() -> str:
    """The unit in the repository (systemd/imgrank-watch.service): a pip-installed `imgrank`, ~/Pictures."""
    return render_unit(
        [Path("%h/Pictures")], home=Path("%h/.config/imgrank"), exec_args=["%h/.local/bin/imgrank"], model="",
        raw=True, installed=[Path("%h/.local")],
    )  # fmt: skip


def unit_dir() -> Path:
    """~/.config/systemd/user (respecting $XDG_CONFIG_HOME)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def resolve_roots(roots: tuple[str, ...] | list[str]) -> list[Path]:
    """The roots given (must exist), else the ones the database remembers."""
    if roots:
        out = [Path(r).expanduser().resolve() for r in roots]
        for r in out:
            if not r.is_dir():
                raise ImgrankError(f"{r} is not a folder")
        return out
    from imgrank import index  # lazy: sqlite_utils
    from imgrank.store.db import open_db  # lazy: sqlite_utils

    out = index.list_roots(open_db())
    if not out:
        raise ImgrankError("no photo folders yet: give one, e.g. `imgrank service install ~/Pictures`")
    return out


def install(roots: list[Path], directory: Path | None = None) -> Path:
    """Write the unit for these roots; returns its path."""
    directory = directory or unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / UNIT_NAME
    path.write_text(render_unit(roots))
    return path


def enable(unit: Path | None = None) -> None:
    """`systemctl --user daemon-reload && systemctl --user enable --now imgrank-watch.service`; where
    that fails (no user manager: a container, an ssh session without lingering), one line says what
    to do instead and where the unit file (`unit`) was left."""
    for argv in (
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT_NAME],
    ):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True)
        except FileNotFoundError:
            raise ImgrankError(
                f"systemctl not found: start it yourself with `imgrank watch` ({ENABLE_LINE})"
            ) from None
        if proc.returncode != 0:
            said = " ".join((proc.stderr or proc.stdout).split())
            left = f"the unit is left at {unit}; " if unit else ""
            raise ImgrankError(
                f"`{' '.join(argv)}` failed: {said} (no systemd user manager here?). {left}run the daemon "
                "with `imgrank watch` instead, or let your user manager run without a login session: "
                f"`loginctl enable-linger $USER`, then `{ENABLE_LINE}`"
            )
