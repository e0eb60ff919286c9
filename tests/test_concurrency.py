"""Everything at once, in real processes: the daemon, `order`, `order --keep-places`, `restore`,
`scan` and `relabel` in loops while photos arrive. Afterwards one `restore` must put back every
original mtime to the nanosecond, and no process may have printed a traceback, an error or
"database is locked".

Every wait is for a condition, with a deadline far beyond what it takes: on a loaded machine the
rounds are slower, so the test runs at least ROUNDS of them however long that takes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import activate_random_head
from images import photo

from imgrank.db import open_db

DURATION = float(os.environ.get("IMGRANK_CONCURRENCY_SECONDS", 40))
PHOTOS = int(os.environ.get("IMGRANK_CONCURRENCY_PHOTOS", 800))
ARRIVAL = 0.35  # seconds between two new photos
ROUNDS = 10  # at least, however long they take
# Deadlines for things that take a moment: generous, as a loaded CI machine is slow (they only
# bound how long a real hang takes to fail).
ROUND_DEADLINE = 300.0
DAEMON_DEADLINE = 180.0
PAST = 1_500_000_000 * 10**9
DAY = 86_400 * 10**9
IMGRANK = [sys.executable, "-m", "imgrank"]


def arrive(root: Path, staging: Path, i: int, originals: dict[str, int]) -> None:
    """A photo with a known original time appears at once (written elsewhere, then renamed in)."""
    tmp = photo(staging / f"new{i:04d}.jpg", seed=100_000 + i, size=(48, 32))
    t = PAST - i * DAY - i * 7919
    os.utime(tmp, ns=(t, t))
    dest = root / ("late" if i % 2 else "") / tmp.name
    dest.parent.mkdir(exist_ok=True)
    originals[str(dest)] = t
    tmp.rename(dest)


# One process per loop runs imgrank commands, as `imgrank ...` would, one per round: round n
# starts for all of them at once when the file go-n appears, and each says it is done with
# done-n-NAME. Commands started together overlap step by step (reading the records, touching the
# files), which is where an unlocked order and restore lose originals; loops left to drift apart,
# or a new interpreter per command, rarely overlap at all. imgrank is imported once per loop.
LOOP = """
import os, sys, time, traceback, click
from imgrank.cli import cli
sync, name, commands = sys.argv[1], sys.argv[2], [c.split("\\x1f") for c in sys.argv[3:]]
n = 0
while True:
    go = os.path.join(sync, f"go-{n}")
    while not os.path.exists(go) and not os.path.exists(os.path.join(sync, "stop")):
        time.sleep(0.001)
    if not os.path.exists(go):
        break
    try:
        cli.main(commands[n % len(commands)], prog_name="imgrank", standalone_mode=False)
    except click.ClickException as e:
        print("Error:", e.format_message(), flush=True)
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
    open(os.path.join(sync, f"done-{n}-{name}"), "w").close()
    n += 1
"""


def loop(name: str, commands: list[list[str]], sync: Path, logs: Path) -> subprocess.Popen:
    """A process running these imgrank commands in turn, one per round; all output to logs/NAME."""
    argv = [sys.executable, "-c", LOOP, str(sync), name, *("\x1f".join(c) for c in commands)]
    return subprocess.Popen(argv, stdout=(logs / name).open("w"), stderr=subprocess.STDOUT)


def rounds(sync: Path, names: list[str], seconds: float, at_least: int) -> int:
    """Start rounds of the loops' commands, all at once, each when the last has finished: for
    `seconds`, and at least `at_least` rounds however slow a loaded machine makes them."""
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end or n < at_least:
        (sync / f"go-{n}").touch()
        wait_until(
            lambda: all((sync / f"done-{n}-{name}").exists() for name in names),  # noqa: B023
            ROUND_DEADLINE,
            f"round {n} did not finish",
        )
        n += 1
    return n


def wait_until(condition, seconds: float, failure: str, every: float = 0.005) -> None:
    """Poll `condition` until it holds; fail with `failure` after `seconds`."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"{failure} within {seconds:.0f} s"
        time.sleep(every)


@pytest.mark.slow
def test_daemon_and_commands_at_once_lose_no_original(model_env, tmp_path, home):
    root, staging = tmp_path / "photos", tmp_path / "staging"
    staging.mkdir()
    originals: dict[str, int] = {}
    for i in range(PHOTOS):  # enough that an order or a restore takes a while, as on a real folder
        p = photo(root / f"d{i % 8}" / f"p{i:04d}.jpg", seed=i, size=(48, 32))
        t = PAST + i * DAY + i * 104729
        os.utime(p, ns=(t, t))
        originals[str(p)] = t
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run([*IMGRANK, "-q", "scan", str(root)], check=True, env=env)
    activate_random_head()
    assert subprocess.run([*IMGRANK, "score"], env=env, capture_output=True).returncode == 0

    sync, logs = tmp_path / "sync", tmp_path / "logs"
    sync.mkdir()
    logs.mkdir()
    daemon = subprocess.Popen(
        [*IMGRANK, "watch", "--settle", "0.3", "--reorder-interval", "0.5", "--retrain-after", "0"],
        stdout=(logs / "daemon").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    some = sorted(originals)[:4]
    commands = {
        "order": [["order"]],
        "keep-places": [["order", "--keep-places", "--step", "10"]],
        "restore": [["restore"]],
        "scan": [["-q", "scan", "--jobs", "1"]],
        "relabel": [["relabel", "delete", *some[:2]], ["relabel", "keep", *some]],
    }
    loops = [loop(name, c, sync, logs) for name, c in commands.items()]
    stop = threading.Event()

    def photos_arrive() -> None:
        i = 0
        while not stop.wait(ARRIVAL):
            arrive(root, staging, i, originals)
            i += 1

    def daemon_says(text: str) -> bool:
        assert daemon.poll() is None, "the daemon stopped: " + (logs / "daemon").read_text()[-2000:]
        return text in (logs / "daemon").read_text()

    arrivals = threading.Thread(target=photos_arrive)
    try:
        # The daemon takes part from the first round: caught up and its order at start done.
        wait_until(lambda: daemon_says("order at start"), DAEMON_DEADLINE, "the daemon did not start")
        arrivals.start()
        n = rounds(sync, list(commands), DURATION, ROUNDS)
        # It has reordered for arrivals at least once (photos keep arriving until it has).
        wait_until(lambda: daemon_says("order updated"), DAEMON_DEADLINE, "the daemon did not reorder", 0.1)
    finally:
        stop.set()
        if arrivals.is_alive():
            arrivals.join()
        (sync / "stop").touch()
        for p in loops:
            p.wait(timeout=ROUND_DEADLINE)
        daemon.terminate()
        daemon.wait(timeout=DAEMON_DEADLINE)
    assert n >= ROUNDS

    final = subprocess.run([*IMGRANK, "restore"], env=env, capture_output=True, text=True)
    lost = [p for p, t in originals.items() if os.lstat(p).st_mtime_ns != t]
    outputs = {log.name: log.read_text() for log in logs.iterdir()}
    problems = [f"{len(lost)} of {len(originals)} original mtimes lost"] if lost else []
    problems += [
        f"{name}: {text.count('Traceback')} tracebacks"
        for name, text in outputs.items()
        if "Traceback" in text
    ]
    problems += [
        f"{name}: {text.count('database is locked')} times 'database is locked'"
        for name, text in outputs.items()
        if "database is locked" in text
    ]
    problems += [  # such as a relabel that could not index a photo an order touched meanwhile
        f"{name}: {line}"
        for name, text in outputs.items()
        for line in text.splitlines()
        if line.lower().startswith("error")
    ][:5]
    if final.returncode != 0:
        problems.append(f"the final restore: {final.stderr.strip()[-500:]}")
    assert not problems, "; ".join(problems)

    # The loops really ran, and the orders and restores really did their work.
    assert outputs["order"].count("ordered ") >= ROUNDS
    assert len(re.findall(r"restored [1-9]\d* mtime", outputs["restore"])) >= ROUNDS // 2
    assert open_db().execute("SELECT count(*) FROM mtimes").fetchone()[0] == 0
