"""Die with the parent: decoding workers and their fork server must not outlive the command that
started them, however it ends (SIGKILL, the OOM killer), or they idle for hours holding memory.

`die_with_parent()` asks Linux to send SIGKILL when the parent goes (prctl PR_SET_PDEATHSIG, through
ctypes). multiprocessing's fork server imports `imgrank.forkserver_init` at its start (its preload
list, see workers.py), which calls it, so the fork server dies with the command; each worker (set
up by workers.init_worker) calls it too, and dies with the fork server.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies; exit now if it already has. Linux only."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or parent == 1:  # the parent went before the request took hold
        os._exit(1)
