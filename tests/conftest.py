"""Shared fixtures: every test gets its own imgrank home, and a tiny random uform-layout model."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Point IMGRANK_HOME at a fresh folder for each test (and the per-user state, imgrank.store.homes)."""
    path = tmp_path / "imgrank-home"
    monkeypatch.setenv("IMGRANK_HOME", str(path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("IMGRANK_MODEL", raising=False)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random-weight model directory in uform's layout (built once per session)."""
    from imgrank.testing.tinymodel import build_model

    return build_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def model_env(tiny_model, monkeypatch):
    """IMGRANK_MODEL set to the tiny model, as a user without internet would set it."""
    monkeypatch.setenv("IMGRANK_MODEL", str(tiny_model))
    return tiny_model
