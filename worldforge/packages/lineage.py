"""`lineage.json`: where a package came from, one typed section for every stage.

    {"stage": "prune", "parent": "packages/world-3f2a", "parent_md5": "9c1...", "parent_version":
     "models:/worldforge-sim-tiny/1", "dataset": "datasets/quickstart-1b51", "dataset_md5": "d41...dir",
     "git_sha": "869812d...", "mlflow_run_id": "4be...", "params": {"plan": {...}, "recovered": true}}

Paths are relative to the project root when they lie inside it (`packages/...`, `datasets/...`),
so a package pulled into another project root still names its parent and dataset; a `models:/`
URI stays as given. `parent_version` is the parent's registry version (`models:/family/N`) when it
has one, also when the parent was registered earlier in the same pipeline run. `params` holds the
stage's own parameters: pretraining's steps and checkpoint, a distillation's method and steps, a
prune plan, an FP8 recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worldforge.core.project import Project

FIELDS = ("stage", "parent", "parent_md5", "parent_version", "dataset", "dataset_md5", "git_sha", "mlflow_run_id")


class Lineage(BaseModel):
    """The lineage of one package; see the module docstring."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    stage: str = Field(description="the stage that wrote the package: pretrain_world, distill, prune, quantize, ...")
    parent: str | None = Field(None, description="the parent package: models:/ URI or path (root-relative)")
    parent_md5: str | None = Field(None, description="package md5 of the parent (config, weights, extras)")
    parent_version: str | None = Field(None, description="the parent's registry version, models:/family/N")
    dataset: str | None = Field(None, description="the dataset folder (root-relative)")
    dataset_md5: str | None = Field(None, description="the dataset's DVC md5 (None: not DVC-tracked)")
    git_sha: str | None = None
    mlflow_run_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="the stage's own parameters")

    @classmethod
    def read(cls, value: dict[str, Any] | None) -> Lineage | None:
        """From lineage.json's content. Files written before lineage was typed (keys such as
        `parent_package`, `teacher_steps` at the top level) are read with those keys moved into
        `params` (`parent_package` becomes `parent`)."""
        if not value:
            return None
        value = dict(value)
        if "parent_package" in value and "parent" not in value:
            value["parent"] = value.pop("parent_package")
        params = dict(value.pop("params", {}) or {})
        params.update({key: value.pop(key) for key in list(value) if key not in FIELDS})
        value.setdefault("stage", "unknown")
        return cls(**value, params=params)


def project_path(path: str | Path | None) -> str | None:
    """`path` relative to the project root when it lies inside it, else absolute; a `models:/`
    URI (or None) unchanged."""
    if path is None or str(path).startswith("models:/"):
        return None if path is None else str(path)
    resolved = Path(path).resolve()
    root = Project.current().root.resolve()
    try:
        return str(resolved.relative_to(root))
    except ValueError:
        return str(resolved)


def project_folder(path: str) -> Path:
    """The folder a lineage path names, in the current project (inverse of `project_path`)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Project.current().root / candidate
