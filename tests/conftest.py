"""Shared test setup: every test runs against its own project root in a temp dir.

Real components only: the MLflow store is a SQLite file under the temp root, DVC repos and
remotes are temp folders, Prefect runs its ephemeral API with a home of its own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Set before any test imports prefect/deepspeed; these only steer where things go and keep
# everything offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# One Prefect home (profiles, result cache, ephemeral database) for the session, never ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="worldforge-tests-prefect-")

# DVC and Prefect bind their log handlers to the sys.stdout/sys.stderr of the moment they are
# imported. Imported here, that is pytest's stream for the whole session; imported first inside a
# CliRunner invocation, it would be the runner's stream, closed when the invocation ends, and every
# later log call in the session would fail.
import dvc  # noqa: F401
from prefect.logging.handlers import PrefectConsoleHandler

# Prefect's console handler is rebuilt (bound to the sys.stderr of that moment) whenever an
# ephemeral server starts, which in a CLI test is CliRunner's stream, closed after the invocation.
# Tests write its records to whatever sys.stderr is current instead.
_console_emit = PrefectConsoleHandler.emit


def _emit_to_current_stderr(self, record):
    self.stream = self.console.file = sys.stderr
    _console_emit(self, record)


PrefectConsoleHandler.emit = _emit_to_current_stderr


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh project root with an embedded SQLite MLflow store and a local DVC remote."""
    from worldforge.core.project import Project

    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("WORLDFORGE_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WORLDFORGE_DVC_REMOTE", raising=False)
    return Project.current(root)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread for every test: the models here are tiny, and on a loaded 2-core
    machine OpenMP threads mostly spin-wait for each other (a rollout gets ~10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite store (migrations take seconds): copy it, never use it."""
    import mlflow

    path = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not path.exists():
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def tiny_config(*overrides: str):
    """The `tiny` preset (configs/tiny.yaml: 32x32 frames, 16 short episodes, a 2-block DiT), with
    dotted overrides; later ones win. The one test-scale config every area's tests start from."""
    from worldforge.config import load_config

    return load_config("tiny", list(overrides))


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """`tiny_config(*overrides)`: the test-scale config factory."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset's simulator dataset (16 episodes of 16 frames at 32x32, 6 windows per
    shard), built once per session, not DVC-tracked. Read-only: copy it to change it. (The data and
    training tests override this fixture with their own shard sizes / episode counts.)"""
    from worldforge.data.shards import build_dataset

    out = tmp_path_factory.mktemp("tiny-dataset") / "sim"
    build_dataset(tiny_config(), out, track=False, progress=False)
    return out


def tiny_world_model(seed: int = 0, steps: int = 2, **model_fields):
    """A tiny world model (32x32 frames, the `tiny` DiT preset; `model_fields` override) with noise
    weights: a fresh DiT has shut AdaLN gates and a zero output layer, so it would output nothing
    a test could tell apart."""
    import torch

    from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel

    torch.manual_seed(seed)
    model = WorldModel.from_config(
        TokenizerConfig(frame_size=(32, 32)),
        ModelConfig(**{"preset": "tiny", "num_actions": 6, **model_fields}),
        ObjectiveConfig(),
        SamplerConfig(steps=steps),
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


@pytest.fixture
def make_world_model():
    """`make_world_model(seed=0, steps=2, **model_fields)`: the test-scale world model factory."""
    return tiny_world_model

