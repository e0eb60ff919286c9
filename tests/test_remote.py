"""scripts/remote-train.sh against a real sshd on 127.0.0.1: the round trip brings back an active head;
a failed step names itself in one line and leaves the local store as it was."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from images import photo

from imgrank.cli import cli
from imgrank.model import load_head
from imgrank.store.vectors import current_model_id

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "remote-train.sh"
SSHD = "/usr/sbin/sshd"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throw-away sshd on 127.0.0.1 for the current user, and an ssh_config that reaches it as `gpu-box`."""
    if not Path(SSHD).exists() or not shutil.which("ssh"):
        if os.environ.get("CI"):
            pytest.fail("openssh-server and openssh-client must be installed for this test (.ci/run does)")
        pytest.skip("needs openssh-server and openssh-client")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = free_port()
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
"""
    )
    (d / "ssh_config").write_text(
        f"""Host gpu-box
    HostName 127.0.0.1
    Port {port}
    User {getpass.getuser()}
    IdentityFile {d / "user_key"}
    IdentitiesOnly yes
    UserKnownHostsFile {d / "known_hosts"}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
"""
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder, made by its service
    log = open(d / "sshd.log", "w")  # open while sshd runs
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("sshd did not start: " + (d / "sshd.log").read_text())
            time.sleep(0.1)
    yield {"config": d / "ssh_config", "port": port, "dir": d}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def remote_dir(tmp_path_factory):
    """The host's working folder, kept for the session: the venv with torch and imgrank is made once."""
    return tmp_path_factory.mktemp("remote-host") / "imgrank-remote"


def invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    assert result.exception is None
    return result.output


@pytest.fixture
def labelled_store(model_env, tmp_path):
    """A store with 12 photos labelled delete and 12 keep, embedded with the tiny model."""
    for i in range(12):
        photo(tmp_path / "photos" / "delete" / f"IMG_{i:03d}.jpg", seed=i)
        photo(tmp_path / "photos" / "keep" / f"DSC_{i:03d}.jpg", seed=100 + i)
    invoke("scan", str(tmp_path / "photos"))
    invoke("relabel", "delete", str(tmp_path / "photos" / "delete"))
    invoke("relabel", "keep", str(tmp_path / "photos" / "keep"))
    return tmp_path


def run_script(*args, timeout=900):
    return subprocess.run(
        ["bash", str(SCRIPT), "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def local_state(home: Path) -> tuple:
    """What a round trip may change here: the runs (and which is active) and the head files."""
    runs = json.loads(invoke("model", "list", "--json"))
    heads = sorted(p.name for p in home.rglob("*.safetensors"))
    return [(r["id"], r["active"]) for r in runs], heads


def test_round_trip_brings_back_an_active_head(sshd, remote_dir, labelled_store, home):
    assert json.loads(invoke("model", "list", "--json")) == []
    result = run_script(
        "-F", str(sshd["config"]), "--remote-python", sys.executable, "--remote-dir", str(remote_dir),
        "gpu-box", "--", "--seed", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "imported as run" in result.stdout and "now active" in result.stdout
    assert "ROC AUC" in result.stdout  # the host's training report reaches the user
    runs = json.loads(invoke("model", "list", "--json"))
    assert len(runs) == 1 and runs[0]["active"]
    # Trained on the host with --device auto (no GPU here: the CPU), and options after -- got there.
    config = load_head(runs[0]["head_path"]).meta["config"]
    assert config["seed"] == 1 and config["device"] == "cpu"
    # The photos are scored with the imported head, and the labels did not stay on the host.
    assert invoke("top", "-n", "24", "--json").count('"score"') == 24
    assert not (remote_dir / "job").exists()
    assert (remote_dir / "venv" / "imgrank-wheel.sha256").is_file()


def test_a_hostile_host_cannot_bring_back_a_head_with_markup(sshd, labelled_store, home, tmp_path):
    """A compromised GPU host answers every step, and its `imgrank train` writes a head that fits this
    store, with a normal-looking AP and markup in its confusion matrix: the import refuses it in one
    line and nothing changes here (before issue 22 it became the active run)."""
    import numpy as np

    from imgrank import model
    from imgrank.store.db import open_db
    from imgrank.store.vectors import store_dims

    db = open_db()
    model_id = current_model_id(db)
    spec = model.feature_spec(model_id, *store_dims(db, model_id))
    n = model.n_features(spec)
    row = {"keep": '<img src=x onerror="alert(1)">', "delete": 3}
    metrics = {"active": {"ap": 0.905, "roc_auc": 0.93, "confusion": {"keep": row, "delete": row}}}
    weights = {"mean": np.zeros(n), "std": np.ones(n), "w0": np.ones((1, n)), "b0": np.zeros(1)}
    hostile = model.save_head(
        weights, {"feature_spec": spec, "n_layers": 1, "metrics": metrics}, tmp_path / "h.st"
    )
    host = tmp_path / "hostile-host"
    (host / "venv" / "bin").mkdir(parents=True)
    (host / "venv" / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")  # "torch is there", "installed"
    (host / "venv" / "bin" / "imgrank").write_text(
        f'#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --out ] && cp {hostile} "$2"; shift; done\n'
        "echo 'held-out AP 0.905, ROC AUC 0.930'\n"
    )
    for f in ("python", "imgrank"):
        (host / "venv" / "bin" / f).chmod(0o755)
    before = local_state(home)
    result = run_script("-F", str(sshd["config"]), "--remote-dir", str(host), "gpu-box")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("remote-train: step 'import head' failed"), result.stderr
    assert "not a usable imgrank head: metrics.active.confusion.keep.keep must be integer" in lines[0]
    assert "<" not in lines[0]
    assert local_state(home) == before


@pytest.mark.parametrize(
    ("options", "step"),
    [
        (["--remote-python", "/nonexistent/python3"], "create venv on gpu-box"),
        (["-o", "Port=1"], "connect to gpu-box"),
    ],
)
def test_a_failed_step_names_itself_in_one_line_and_changes_nothing(
    sshd, labelled_store, home, tmp_path, options, step
):
    before = local_state(home)
    result = run_script(
        "-F", str(sshd["config"]), "--remote-dir", str(tmp_path / "fresh-host"), *options, "gpu-box"
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"remote-train: step '{step}' failed"), lines[0]
    assert local_state(home) == before
    assert not (tmp_path / "fresh-host" / "job").exists()  # the labels copied there are gone again


def test_the_job_folder_on_the_host_is_removed_however_the_run_ends_and_tilde_means_home(
    sshd, labelled_store, home
):
    """The labels reach the host, then a step fails: the trap removes them there. `~/DIR` is the
    same folder for ssh's commands and scp (a literal `~` folder once took scp's copy)."""
    name = f"imgrank-remote-test-{os.getpid()}"
    on_host = Path.home() / name  # sshd logs in as this user, so the host's home is ours
    try:
        result = run_script(
            "-F", str(sshd["config"]), "--remote-dir", f"~/{name}", "--remote-python", "/nonexistent/python3",
            "gpu-box",
        )  # fmt: skip
        assert result.returncode == 1
        assert "step 'create venv on gpu-box' failed" in result.stderr, result.stderr
        assert on_host.is_dir() and not (on_host / "job").exists()  # made by `connect`, emptied on exit
        assert not (Path.home() / "~" / name).exists() and not (Path("~") / name).exists()
    finally:
        for path in (on_host, Path.home() / "~" / name, Path("~") / name):  # a literal `~` too
            shutil.rmtree(path, ignore_errors=True)


def test_the_job_folder_is_removed_when_the_run_is_interrupted(sshd, labelled_store, home, tmp_path):
    """Ctrl-C (SIGINT to the whole foreground group, ssh included) while the host works (a `python`
    there that sleeps): the EXIT trap still runs and removes the labels from the host."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    host_dir = tmp_path / "host"
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "--python", sys.executable, "-F", str(sshd["config"]),
         "--remote-python", str(slow), "--remote-dir", str(host_dir), "gpu-box"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (host_dir / "job" / "labels.parquet").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1)  # into the `create venv` step, waiting on the host
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=25)  # well before the host's python would have finished
    assert proc.returncode != 0
    assert not (host_dir / "job").exists()


@pytest.mark.parametrize(
    "remote_dir",
    ["x $(touch PWNED)", "x`touch PWNED`", "$(touch PWNED)", "a b", "~other/x", "-rf", "~", "", "..", "."],
)
def test_a_remote_dir_that_is_not_a_plain_path_is_refused_before_anything_runs(tmp_path, remote_dir):
    """Nothing is exported or contacted: refused while reading the options (no ssh needed)."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "--python", "/nonexistent/python3", "--remote-dir", remote_dir, "gpu-box"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("remote-train: --remote-dir"), result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_train_device_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = tmp_path / "labels.parquet"
    data.write_bytes(b"not read: the device is checked first")
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--device", "cuda"])
    assert result.exit_code == 1
    assert "no CUDA device" in result.output and "--device auto or cpu" in result.output
