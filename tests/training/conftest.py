"""Fixtures of the training tests: a test-scale config (32x32 frames, a 2-block DiT of width 32,
a few steps) and one simulator dataset built once per session, which tests only read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The torchrun worker (training_runs.py) beside this file is imported by the tests too.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_runs import TINY, tiny_config


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    return tiny_config


@pytest.fixture(scope="session")
def tiny_dataset(make_dataset) -> Path:
    """24 simulator episodes of 16 frames at 32x32 (2 windows each, 6 per shard), untracked."""
    return make_dataset(*TINY)
