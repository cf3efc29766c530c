"""Fixtures of the play tests: a held-out split with a few episodes, and a tiny model package."""

from __future__ import annotations

from pathlib import Path

import pytest

# The evaluation tests' dataset (the same overrides: built once per session for both).
HELD_OUT = ("data.episodes=6", "data.splits={train: 0.5, test: 0.5}")


@pytest.fixture(scope="session")
def held_out_dataset(make_dataset) -> Path:
    """6 simulator episodes of 16 frames at 32x32; 3 of them held out (test)."""
    return make_dataset(*HELD_OUT)


@pytest.fixture
def package(tmp_path: Path, make_world_model) -> Path:
    """A tiny world-model package with noise weights and a 3-frame context window."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    model = make_world_model(context_window=3)
    return save_package(tmp_path / "model", package_config(model), model)
