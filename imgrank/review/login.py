"""The owner-only redirect file the browser is opened with (the login address never on a command line)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from imgrank import config


def open_file(login_url: str, port: int) -> Path:
    """A redirect file to `login_url`, readable by the owner alone (as Jupyter's `-open.html`): the
    browser is opened with this file's path, so no command line (`ps`) holds a secret."""

    path = config.home_dir() / f"review-{port}-open.html"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    text = (
        '<!doctype html><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={login_url}"><title>imgrank review</title>'
        f'<p><a href="{login_url}">Open imgrank review</a></p>\n'
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # a planted file or symlink at `path` is replaced, never written through
    return path
