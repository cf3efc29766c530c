"""Fixtures of the compression tests: a small simulator dataset (built once per session) and a
tiny world-model package with random weights on its 32x32 frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

QUANT_DATA = [
    "data.resolution=32",
    "data.episodes=8",
    "data.episode_frames=16",
    "data.window_frames=8",
    "data.clip_frames=4",
    "data.clip_stride=2",
    "data.shards.maxcount=4",
    "data.loader.batch_size=4",
    "data.loader.shuffle_buffer=1",
]


@pytest.fixture
def single_thread():
    """One intra-op thread: on a busy 2-core machine two threads contend and a rollout of the tiny
    model takes seconds instead of a tenth of one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def quant_config():
    """`quant_config(*overrides)`: the root config at the scale of the quantization tests."""
    from worldforge.config import load_config

    return lambda *overrides: load_config(None, QUANT_DATA + list(overrides))


@pytest.fixture(scope="session")
def quant_dataset(tmp_path_factory: pytest.TempPathFactory, quant_config) -> Path:
    """8 simulator episodes of 16 frames at 32x32 (train: 6 episodes, 36 clips of 4 frames)."""
    from worldforge.data.shards import build_dataset

    out = tmp_path_factory.mktemp("quant-data") / "sim"
    build_dataset(quant_config(), out, track=False, progress=False)
    return out


@pytest.fixture
def source_package(tmp_path: Path, make_world_model) -> Path:
    """A saved (unquantized) tiny world-model package (the root conftest's model, width 128)."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    model = make_world_model()
    return save_package(tmp_path / "source", package_config(model), model, lineage={"stage": "pretrain"})


@pytest.fixture
def tracked_quant_project(project, tmp_path_factory: pytest.TempPathFactory):
    """`project` (a fresh root) whose MLflow store is a copy of one migrated once per session:
    creating a SQLite store runs migrations for seconds."""
    import shutil

    import mlflow

    template = tmp_path_factory.getbasetemp() / "quant-mlflow-template.db"
    if not template.exists():
        mlflow.MlflowClient(f"sqlite:///{template}").search_experiments()
    shutil.copy(template, project.mlflow_db)
    return project


def _assert_registered_with_decision(output: str, preset, stage: str, md5: str) -> None:
    """The CLI printed a registered version of `stage`, evaluated (metrics tags against the parent)
    and offered to the gates (a decision tag with its checks)."""
    import json
    import re

    import mlflow

    from worldforge.config import load_config

    number = re.search(r"registered: version (\d+)", output).group(1)
    version = mlflow.MlflowClient().get_model_version(load_config(str(preset)).project.family, number)
    assert version.tags["stage"] == stage and version.tags["package.md5"] == md5
    assert "metric.psnr_mean" in version.tags and "metric.agent_position_error" in version.tags
    decisions = [json.loads(value) for key, value in version.tags.items() if key.startswith("decision.")]
    assert len(decisions) == 1 and decisions[0]["checks"], decisions
    assert "promotion: " in output


@pytest.fixture
def assert_registered_with_decision():
    """`assert_registered_with_decision(cli_output, preset, stage, package_md5)`."""
    return _assert_registered_with_decision

