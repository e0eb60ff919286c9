"""Where things live and the settings every module shares."""

from __future__ import annotations

import os
from pathlib import Path

import click

DEFAULT_MODEL = "unum-cloud/uform3-image-text-english-small"


def home_dir() -> Path:
    """The imgrank home: $IMGRANK_HOME, else the platform's per-user app directory."""
    env = os.environ.get("IMGRANK_HOME")
    path = Path(env) if env else Path(click.get_app_dir("imgrank"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def db_path() -> Path:
    return home_dir() / "imgrank.db"


def heads_dir() -> Path:
    path = home_dir() / "heads"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def model_name() -> str:
    """The embedding model: $IMGRANK_MODEL (hub id or local directory), else the default."""
    return os.environ.get("IMGRANK_MODEL") or DEFAULT_MODEL
