"""Fixtures of the data tests: tiny configs (32x32 frames, a few short episodes) and one dataset
built once per session, which tests only read (tests that damage shards copy it first)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worldforge.config import WorldforgeConfig, load_config

# The `tiny` preset (16 episodes of 16 frames at 32x32) with 3 windows per shard, so that its 32
# windows span several shards of every split, and batches of 4.
DATA = ["data.shards.maxcount=3", "data.loader.batch_size=4", "data.loader.shuffle_buffer=16"]


def tiny_config(*overrides: str) -> WorldforgeConfig:
    """The `tiny` preset at the data tests' shard size; later overrides win."""
    return load_config("tiny", DATA + list(overrides))


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """`tiny_config(*overrides)`: the data tests' config factory."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_dataset(make_dataset) -> Path:
    """16 simulator episodes of 16 frames at 32x32: 2 windows each, 3 windows per shard.
    Read-only: copy it (`dataset_copy`) to damage it."""
    return make_dataset(*DATA)


@pytest.fixture
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sim"
    shutil.copytree(tiny_dataset, copy)
    return copy
