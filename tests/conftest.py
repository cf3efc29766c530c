"""Shared test setup: every test runs against its own project root in a temp dir.

Real components only: the MLflow store is a SQLite file under the temp root, DVC repos and
remotes are temp folders, Prefect runs its ephemeral API with a home of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import dvc  # noqa: F401  (see below)
import pytest

# `import dvc` binds DVC's log handlers to the sys.stdout of that moment. Imported here, that is
# pytest's stream for the whole session; imported first inside a CliRunner invocation, it would be
# the runner's stream, closed when the invocation ends, and every later DVC call would fail to log.

# Set before any test imports prefect/deepspeed; these only steer where things go and keep
# everything offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    return home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh project root with an embedded SQLite MLflow store and a local DVC remote."""
    from worldforge.platform.project import Project

    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("WORLDFORGE_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WORLDFORGE_DVC_REMOTE", raising=False)
    return Project.current(root)
