"""Fixtures of the compression tests: a small simulator dataset (built once per session) and a
tiny world-model package with random weights on its 32x32 frames."""

from __future__ import annotations

from pathlib import Path

import pytest

# The `tiny` preset with 8 episodes (train: 6 episodes, 36 clips of 4 frames) in shards of 4
# windows, read in order in batches of 4.
QUANT_DATASET = ["data.episodes=8", "data.shards.maxcount=4"]
QUANT_DATA = QUANT_DATASET + ["data.loader.batch_size=4", "data.loader.shuffle_buffer=1"]


@pytest.fixture(scope="session")
def quant_config():
    """`quant_config(*overrides)`: the `tiny` preset at the scale of the quantization tests."""
    from worldforge.config import load_config

    return lambda *overrides: load_config("tiny", QUANT_DATA + list(overrides))


@pytest.fixture(scope="session")
def quant_dataset(make_dataset) -> Path:
    """8 simulator episodes of 16 frames at 32x32 (train: 6 episodes, 36 clips of 4 frames)."""
    return make_dataset(*QUANT_DATASET)


@pytest.fixture
def source_package(tmp_path: Path, make_world_model) -> Path:
    """A saved (unquantized) tiny world-model package (the root conftest's noise-weight model)."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    model = make_world_model()
    return save_package(tmp_path / "source", package_config(model), model, lineage={"stage": "pretrain"})


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
