"""The stores this user has had: a small per-user state file, outside any imgrank home.

A home's marker (db.MARKER) says a store was there, but `rm -rf $IMGRANK_HOME` takes the marker
with it. So each database imgrank opens is also listed in $XDG_STATE_HOME/imgrank/homes (else
~/.local/state/imgrank/homes): one absolute path a line, 0600 in a 0700 folder, written the private
way (imgrank.private). A listed database that is gone lost its store, and `db.open_db` refuses to
start a new one there, as for the marker; `imgrank scan` starts afresh and lists it again.

The list is a guard, never a reason to fail: a state folder that cannot be read or written leaves
imgrank as it was without it (the marker still tells).
"""

from __future__ import annotations

import os
from pathlib import Path

from imgrank.errors import StoreError
from imgrank.private import private_dir, write_private


def state_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "imgrank" / "homes"


def _listed() -> list[str]:
    try:
        return state_file().read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except (OSError, ValueError):
        return []


def known(db: Path) -> bool:
    """Was a database at this path opened before (by this user)?"""
    return os.path.abspath(db) in _listed()


def remember(db: Path) -> None:
    """List this database (nothing is written when it is listed already). Entries whose folder's
    parent is gone too (a temporary home, removed with the folder it was made in) are dropped."""
    path = os.path.abspath(db)
    listed = _listed()
    if path in listed:
        return
    kept = [p for p in listed if os.path.isdir(os.path.dirname(os.path.dirname(p)))]
    file = state_file()
    try:
        os.makedirs(file.parent.parent, mode=0o700, exist_ok=True)
        private_dir(file.parent, file.parent.parent)
        write_private(file, "".join(f"{p}\n" for p in [*kept, path]).encode("utf-8", "surrogateescape"))
    except (OSError, StoreError):
        pass
