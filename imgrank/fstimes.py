"""What a folder's file system does with the times imgrank sets, asked before `order` writes there.

- `resolution(folder)`: the finest time step the file system keeps (1 ns on ext4, 10 ms on exFAT,
  2 s on FAT), found by setting times on a scratch file in the folder and reading them back. An
  order whose step the file system cannot keep is refused: its times would not come back as set.
- `shifted_hours(pairs)`: whether every file of a root now has its imgrank time moved by the same
  whole number of hours (a FAT disk mounted under another time zone): those times are still
  imgrank's, never the owner's own.
"""

from __future__ import annotations

import os
import tempfile

from imgrank.errors import ImgrankError

# Steps tried in turn, finest first: the first that round-trips is the resolution.
CANDIDATES = (1, 1_000, 1_000_000, 10_000_000, 1_000_000_000, 2_000_000_000)
# An even second in 2020: inside FAT's range (1980-2107), on every candidate's grid.
BASE_NS = 1_600_000_000 * 10**9
HOUR_NS = 3600 * 10**9


def resolution(folder: str) -> int | None:
    """The finest step in ns the file system of `folder` keeps, or None when it cannot be asked
    (a read-only or full folder: then nothing can be set there either). Asked anew each time: a
    device number is reused by the next disk mounted, so it cannot key what was learnt."""
    try:
        fd, scratch = tempfile.mkstemp(prefix=".imgrank-time-probe-", dir=folder)
    except OSError:
        return None
    try:
        found = None
        for step in CANDIDATES:
            want = BASE_NS + step
            os.utime(fd, ns=(want, want))
            if os.fstat(fd).st_mtime_ns == want:
                found = step
                break
        found = found or CANDIDATES[-1]
    except OSError:
        return None
    finally:
        os.close(fd)
        try:
            os.unlink(scratch)
        except OSError:
            pass
    return found


def check_step(step_ns: int, folders: list[str]) -> None:
    """Refuse (one line) a step the file system of one of these folders cannot keep."""
    for folder in folders:
        res = resolution(folder)
        if res is not None and step_ns % res:
            raise ImgrankError(
                f"--step {step_ns / 1e9:g} cannot be kept on {folder}: its file system keeps times "
                f"to {_seconds(res)}; use a multiple of that (e.g. --step {max(res, 2 * 10**9) / 1e9:g})"
            )


def shifted_hours(pairs: list[tuple[int, tuple[int, ...]]]) -> int | None:
    """pairs: (mtime_ns on disk, the imgrank times the file may have) for a root's ordered files.
    The whole number of hours every one of them moved by, when they all moved by the same
    non-zero number of hours; else None."""
    shift = None
    for mtime_ns, ours in pairs:
        if mtime_ns in ours or not ours:
            return None
        diff = mtime_ns - ours[0]
        if diff % HOUR_NS or (shift is not None and diff != shift):
            return None
        shift = diff
    return None if not shift else shift // HOUR_NS


def _seconds(ns: int) -> str:
    return f"{ns} ns" if ns < 1000 else f"{ns / 1e9:g} s"
