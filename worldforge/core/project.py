"""The project root: one folder that holds everything worldforge writes by default.

`WORLDFORGE_ROOT` or the current directory. Datasets, model packages, reports, the SQLite MLflow
store and its artifacts, the DVC repo and its local remote, and Prefect's home all live under it,
so a project can be moved, cleaned or handed over as one folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def current(cls, root: str | Path | None = None) -> Project:
        """The project at `root`, else `$WORLDFORGE_ROOT`, else the current directory."""
        chosen = root or os.environ.get("WORLDFORGE_ROOT") or Path.cwd()
        return cls(Path(chosen).resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def prefect_home(self) -> Path:
        return self.root / ".prefect"
