"""The one place that sets a photo's time: `Toucher` (the only `os.utime` on a photo), through the
file's own descriptor opened from its folder's, never through a symlink; checked unchanged just
before, read back after. Split from owntimes.py (which re-exports it) for its size.
"""

from __future__ import annotations

import os
import stat as stat_mod

VANISHED = "vanished"
CHANGED = "changed while imgrank was ordering it: not touched (its new time is its own)"


def lstat(path: str) -> tuple[os.stat_result | None, str | None]:
    """The file's own stat (a symlink is never followed), or why it cannot be touched."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return None, VANISHED if isinstance(e, FileNotFoundError) else (e.strerror or str(e))
    if not stat_mod.S_ISREG(st.st_mode):
        return None, "not a regular file any more"
    return st, None


class Toucher:
    """Sets photos' mtimes (the only `os.utime` on a photo), never through a symlink.

    Each file is touched relative to a descriptor of its folder, opened without following a
    symlink at the last step and checked to be the folder the path names: a folder on the way
    swapped for a symlink (to somewhere outside the roots) is refused, whatever it points to.
    Files come in path order, so one folder descriptor serves all its files.
    """

    def __init__(self) -> None:
        self._folder: str | None = None
        self._fd: int | None = None
        self._why: str | None = None
        self.held_ns: int | None = None  # the time the last touch left, as the file system holds it
        self._looked: list = []  # [path, descriptor] that look() left open

    def __enter__(self) -> Toucher:
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        self._drop_looked()
        if self._fd is not None:
            os.close(self._fd)
        self._folder = self._fd = self._why = None

    def _open_folder(self, folder: str) -> None:
        self._close()
        self._folder = folder
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._why = VANISHED  # its folder is gone, and it with it
            return
        except OSError as e:
            if os.path.islink(folder):
                self._why = f"its folder is a symlink now (to {os.path.realpath(folder)}): not touched"
            else:
                self._why = e.strerror or str(e)
            return
        real = _real_path(fd, folder)
        if real != folder:
            os.close(fd)
            self._why = f"a folder on its path is a symlink now (to {real}): not touched"
            return
        self._fd = fd

    def touch(
        self, path: str, atime_ns: int, mtime_ns: int, read: os.stat_result | None = None
    ) -> str | None:
        """Set the mtime, keep the atime; the reason on failure (VANISHED, CHANGED, or the OS's).

        With `read` (the stat the caller planned from), the file is checked just before the touch,
        through the descriptor the touch goes through: one written, replaced or given another
        time since is left alone (CHANGED), so the owner's edit wins. Right after `look(path)` that
        stat, read through the descriptor the touch goes through, is the check. `held_ns` is then
        the time the file system holds, read back after the touch (a coarse one keeps less)."""
        self.held_ns = None
        looked, check = self._looked, read is not None
        if looked and looked[0] == path:  # look() just read it through this descriptor
            fd, check, self._looked = looked[1], False, []
        else:
            fd, name, why = self._open_file(path)
            if fd is None:
                return why if why is not None else self._touch_by_name(name, atime_ns, mtime_ns, read)
        try:
            if check and _moved(os.fstat(fd), read):
                return CHANGED
            os.utime(fd, ns=(atime_ns, mtime_ns))
            self.held_ns = os.fstat(fd).st_mtime_ns
        except OSError as e:
            return e.strerror or str(e)
        finally:
            os.close(fd)
        return None

    def look(self, path: str) -> tuple[os.stat_result | None, str | None]:
        """The file's stat read through the descriptor a `touch` of it right after goes through
        (held open until then), or why it cannot be touched (as `lstat` says, or its folder's)."""
        fd, name, why = self._open_file(path)
        if fd is None:  # a symlink, or not readable by us (touch checks it by name), or why not
            return lstat(path) if why is None else (None, why)
        self._looked = [path, fd]
        st = os.fstat(fd)  # an error here (EIO) is the caller's, as lstat's would have been
        return (st, None) if stat_mod.S_ISREG(st.st_mode) else (None, "not a regular file any more")

    def _open_file(self, path: str) -> tuple[int | None, str, str | None]:
        """(descriptor, name, None); (None, name, why) where it cannot be touched; (None, name,
        None) where it cannot be opened but may be touched by name (not readable by us)."""
        if self._looked:
            self._drop_looked()
        folder, _, name = path.rpartition(os.sep)  # os.path.split's result for an absolute path, faster
        if folder != self._folder:
            self._open_folder(folder)
        if self._fd is None:
            return None, name, self._why
        try:
            return os.open(name, _OPEN_FLAGS, dir_fd=self._fd), name, None
        except FileNotFoundError:
            return None, name, VANISHED
        except OSError:
            return None, name, None

    def _drop_looked(self) -> None:
        if self._looked:
            os.close(self._looked[1])
            self._looked = []

    def _touch_by_name(
        self, name: str, atime_ns: int, mtime_ns: int, read: os.stat_result | None
    ) -> str | None:
        try:
            if read is not None and _moved(os.stat(name, dir_fd=self._fd, follow_symlinks=False), read):
                return CHANGED
            os.utime(name, ns=(atime_ns, mtime_ns), dir_fd=self._fd, follow_symlinks=False)
            self.held_ns = os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            return VANISHED
        except OSError as e:
            return e.strerror or str(e)
        return None


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block


def _moved(now: os.stat_result, read: os.stat_result) -> bool:
    """Did the file change between the stat `read` and `now` (written, replaced, time set)?"""
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
        read.st_dev, read.st_ino, read.st_size, read.st_mtime_ns, read.st_ctime_ns
    )  # fmt: skip


def _real_path(fd: int, fallback: str) -> str:
    """Where an open folder really is (its path with every symlink resolved)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)
