"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from imgrank import config
from imgrank.store.db import open_db, set_setting, to_blob
from imgrank.store.labels import set_label
from imgrank.store.vectors import current_model_id


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def separable(n: int, dim: int = 16, delete_rate: float = 0.25, seed: int = 0, margin: float = 0.5):
    """Vectors whose label (1 = delete) is a linear function of them, with a margin between the classes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4 * n, dim))
    w = unit(rng.normal(size=(1, dim)))[0]
    s = x @ w
    threshold = np.quantile(s, 1 - delete_rate)
    far = np.abs(s - threshold) > margin
    return x[far][:n].astype(np.float32), (s[far][:n] > threshold).astype(int)


def store(db, vectors: np.ndarray, labels: np.ndarray | None = None, model: str | None = None) -> list[str]:
    """Put vectors (and labels) in the store as if scanned: one present file per vector, and the
    store's embedding model recorded as `scan` records it."""
    model = model or config.model_name()
    set_setting(db, "embed_model", model)
    start = db.execute("SELECT count(*) FROM files").fetchone()[0]
    shas = [f"{start + i:064x}" for i in range(len(vectors))]
    with db.atomic():
        db.execute("INSERT OR IGNORE INTO roots (path, added_at) VALUES ('/photos', 0)")
        root_id = db.execute("SELECT id FROM roots WHERE path = '/photos'").fetchone()[0]
        for i, (sha, v) in enumerate(zip(shas, vectors, strict=True)):
            db.execute(
                "INSERT INTO files (path, root_id, sha256, state, size, mtime_ns, width, height) "
                "VALUES (?, ?, ?, 'ok', ?, 0, 640, 480)",
                [f"/photos/img{start + i:05d}.jpg", root_id, sha, 1000 + i],
            )
            db.execute(
                "INSERT INTO vectors (sha256, model, dim, vector) VALUES (?, ?, ?, ?)",
                [sha, model, len(v), to_blob(v)],
            )
    if labels is not None:
        for i, sha in enumerate(shas):
            set_label(db, sha, "delete" if labels[i] else "keep", "user", f"/photos/img{start + i:05d}.jpg")
    return shas


def activate_random_head(seed: int = 0) -> None:
    """A linear head over the store's features, imported and activated as a run (no torch needed)."""
    from imgrank import model, runs
    from imgrank.store import vectors

    db = open_db()
    model_id = current_model_id(db)
    spec = model.feature_spec(model_id, *vectors.store_dims(db, model_id))
    n = model.n_features(spec)
    rng = np.random.default_rng(seed)
    weights = {"mean": np.zeros(n), "std": np.ones(n), "w0": rng.normal(size=(1, n)), "b0": np.zeros(1)}
    path = model.save_head(
        weights, {"feature_spec": spec, "n_layers": 1}, Path(os.environ["IMGRANK_HOME"]) / "h.st"
    )
    runs.import_head(db, path)
    db.close()


def can_mount_read_only(path: Path) -> bool:
    """Whether a read-only bind mount over `path` works here (a private user and mount namespace)."""
    if not shutil.which("unshare"):
        return False
    probe = f"mount --bind {path} {path} && mount -o remount,ro,bind {path}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


def wait_for(condition, timeout: float = 60.0, every: float = 0.05):
    """Poll `condition` until it is truthy and return its value; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def run_python(code: str, home) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh interpreter with IMGRANK_HOME at `home` (what a new process imports)."""
    env = {**os.environ, "IMGRANK_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
