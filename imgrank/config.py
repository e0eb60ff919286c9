"""Where things live and the settings every module shares."""

from __future__ import annotations

import os
from pathlib import Path

import click

from imgrank.errors import StoreError
from imgrank.private import check_home, private_dir

DEFAULT_MODEL = "unum-cloud/uform3-image-text-english-small"


def home_dir() -> Path:
    """The imgrank home: $IMGRANK_HOME, else the platform's per-user app directory.

    Created if needed and forced to 0700; one that cannot be a writable folder, or that another
    user owns or could change, is refused (StoreError, see private.check_home)."""
    env = os.environ.get("IMGRANK_HOME")
    path = Path(env) if env else Path(click.get_app_dir("imgrank"))
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise StoreError(f"imgrank home {path} is a file, not a folder: give another with --home") from None
    except NotADirectoryError:
        raise StoreError(
            f"imgrank home {path} is under a file, not a folder: give another with --home"
        ) from None
    except OSError as e:
        raise StoreError(f"cannot create the imgrank home {path}: {e.strerror or e}") from None
    try:
        check_home(path)
    except OSError as e:
        if not _read_only_fs(path):  # on a read-only file system the next check says so
            raise StoreError(f"cannot check the imgrank home {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        why = "on a read-only file system" if _read_only_fs(path) else "not writable by you"
        raise StoreError(f"imgrank home {path} is {why}: give a writable folder with --home")
    return path


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def db_path() -> Path:
    return home_dir() / "imgrank.db"


def heads_dir() -> Path:
    return private_dir(home_dir() / "heads", home_dir())


def model_name(remembered: str | None = None) -> str:
    """The embedding model: $IMGRANK_MODEL (hub id or local directory), else the one the store
    remembers (`remembered`, see db.model_name), else the default."""
    return os.environ.get("IMGRANK_MODEL") or remembered or DEFAULT_MODEL
