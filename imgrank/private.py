"""Private files: the imgrank home and everything imgrank writes (0700 folders, 0600 files).

A file is never opened for writing by its name: it is written to a new temporary file beside it
(O_CREAT|O_EXCL, which refuses any existing name, a symlink included, so nothing is written
through a planted link) and renamed over the name, which replaces a link rather than following it.
Readers never see half a file, and the mode is 0600 whatever the umask.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imgrank.errors import StoreError


def check_home(path: Path) -> None:
    """Refuse a home that another user owns or could write into; take everyone else's access away.

    The home and every folder above it must belong to this user or root and be writable by no one
    else (a world-writable folder with the sticky bit, like /tmp, is fine: nobody can rename what
    is ours in it). A home that others can write to is refused, not repaired: what it already
    holds (a planted prompts.txt, a link at heads/head-1.json) cannot be trusted. StoreError."""
    me = os.geteuid()
    st = os.stat(path)
    if st.st_uid != me:
        raise StoreError(
            f"imgrank home {path} belongs to another user (uid {st.st_uid}): "
            "give a folder of your own with --home"
        )
    if st.st_mode & 0o022:
        raise StoreError(
            f"imgrank home {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"check what is in it, then `chmod 700 {path}`, or give another folder with --home"
        )
    trusted = _trusted_owners(me)
    given, real = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    for folder in dict.fromkeys([*given.parents, *real.parents]):  # a link's folder, and the target's
        fst = os.stat(folder)
        foreign = fst.st_uid not in trusted
        writable = fst.st_mode & 0o022 and not fst.st_mode & stat.S_ISVTX
        if foreign or writable:
            who = f"belongs to another user (uid {fst.st_uid})" if foreign else "is writable by other users"
            raise StoreError(
                f"imgrank home {path} is inside {folder}, which {who} and so could swap the home: "
                "give a folder with --home that only you (and root) can change"
            )
    if st.st_mode & 0o077:  # no way in for anyone else; the owner's own bits are left as they are
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


@functools.cache  # the process's user namespace does not change
def _trusted_owners(me: int) -> frozenset[int]:
    """Who may own the folders above the home: us and root. In a user namespace (the systemd unit's
    PrivateUsers=yes) every uid but ours, root's included, shows as the overflow uid (nobody)."""
    try:
        with open("/proc/self/uid_map") as f:
            identity = f.read().split() == ["0", "0", "4294967295"]
        with open("/proc/sys/kernel/overflowuid") as f:
            overflow = int(f.read())
    except (OSError, ValueError):
        return frozenset({0, me})
    return frozenset({0, me} if identity else {0, me, overflow})


def private_dir(path: Path, base: Path) -> Path:
    """`path` (inside the folder `base`) and the folders between them: made 0700, or forced to 0700.

    A link or a file where a folder should be is refused (StoreError), never followed."""
    path = Path(path)
    parts = path.relative_to(base).parts
    folder = Path(base)
    for part in parts:
        folder = folder / part
        try:
            os.mkdir(folder, 0o700)
            continue
        except FileExistsError:
            pass
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{folder} should be a folder of imgrank's, but is a link or a file: remove it")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(folder, 0o700)
    return path


@contextlib.contextmanager
def private_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A new file for writing `path`: 0600, renamed over `path` when the block ends without error.

    On an error the temporary file is removed and `path` is left as it was. OSError as raised."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL, 0600
    try:
        with open(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_private(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` as a new 0600 file (see private_output). OSError as raised."""
    with private_output(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def open_private_log(path: str | os.PathLike) -> int:
    """A descriptor for a new, empty log file at `path` in imgrank's home: 0600, made as a new file
    and renamed over the name, so a link planted there is replaced, never written through."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.replace(tmp, path)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd
