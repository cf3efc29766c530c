"""Fixtures of the evaluation tests: a small simulator dataset (built once per session), real
tiny world-model packages, and a project whose MLflow store is a real SQLite file.

`tracked_project` (the root conftest) copies a store migrated once per session into each test's
project root, so every test still gets a store of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

FRAME_SIZE = 32
SIM_ACTIONS = 6  # the simulator's action space: noop, up, down, left, right, push


@pytest.fixture(scope="session")
def sim_dataset(make_dataset) -> Path:
    """6 simulator episodes of 16 frames at 32x32 with ground-truth state; 3 held out (test)."""
    return make_dataset("data.episodes=6", "data.splits={train: 0.5, test: 0.5}")


@pytest.fixture
def make_package(tmp_path: Path, make_world_model):
    """`make_package(name, seed=0, metrics=None)` -> the folder of a saved tiny world-model package."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    def make(
        name: str = "model", seed: int = 0, metrics: dict | None = None, lineage: dict | None = None
    ) -> Path:
        model = make_world_model(seed, depth=2, width=64, heads=2, context_window=4)
        return save_package(
            tmp_path / "packages" / name, package_config(model), model, lineage=lineage, metrics=metrics
        )

    return make


@pytest.fixture
def small_eval():
    """An eval config sized for tests: 2 episodes, 2 context frames, horizon 4; long play of 2
    episodes for 16 frames."""
    from worldforge.evaluation.config import EvalConfig

    return EvalConfig(
        episodes=2,
        context_frames=2,
        horizon=4,
        batch_size=2,
        videos=1,
        latency_repeats=2,
        device="cpu",
        play_episodes=2,
        play_frames=16,
    )
