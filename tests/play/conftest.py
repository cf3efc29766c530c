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


@pytest.fixture
def continuous_dataset(tmp_path: Path, write_video, tiny_config) -> Path:
    """Two videos with 2-D continuous actions (x ramps 0 -> 1, y 0 -> -1 over 48 frames), both
    held out (the `video` source; skipped without PyAV)."""
    import json

    from worldforge.data.shards import build_dataset

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("one", "two"):
        write_video(folder / f"{name}.mp4")
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps([t / 48, -t / 48]) for t in range(48)))
    config = tiny_config(
        "data.source=video", f"data.video.folder={folder}", "data.video.fps=15", "data.splits={test: 1.0}"
    )
    return build_dataset(config, tmp_path / "continuous", track=False, progress=False).path


@pytest.fixture
def continuous_package(tmp_path: Path, make_world_model) -> Path:
    """A tiny world model for 2-D continuous actions."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    model = make_world_model(context_window=3, action_space="continuous", action_dim=2)
    return save_package(tmp_path / "continuous-model", package_config(model), model)
