"""Publishing a package as a registry version: logged as a pyfunc model, tagged with its lineage,
key metrics and md5, and made `candidate` when it beats copy-last-frame."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

import worldforge
from worldforge.core import tracking
from worldforge.core.lineage import tracked_md5
from worldforge.packages import load_package, package_md5
from worldforge.packages.lineage import Lineage
from worldforge.registry.config import RegistryConfig
from worldforge.registry.gates import KEY_METRICS, beats_baseline
from worldforge.registry.pyfunc import MODEL_NAME, PYFUNC_CODE
from worldforge.registry.store import CANDIDATE, client


def _ensure_registered_model(family: str) -> None:
    mlflow_client = client()
    try:
        mlflow_client.get_registered_model(family)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(family, description="worldforge model family")
        except MlflowException as error:  # created concurrently
            if "already exists" not in str(error).lower():
                raise


def _signature(config: dict[str, Any]):
    tokenizer, model = config["tokenizer"], config["model"]
    frame = (tokenizer["frame_channels"], *tokenizer["frame_size"])
    if model["action_space"] == "discrete":
        actions = TensorSpec(np.dtype(np.int64), (-1, -1), "actions")
    else:
        actions = TensorSpec(np.dtype(np.float32), (-1, -1, model["action_dim"]), "actions")
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *frame), "context_frames"), actions]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *frame), "frames")]),
        params=ParamSchema(
            [ParamSpec("horizon", "long", 8), ParamSpec("steps", "long", 0), ParamSpec("seed", "long", 0)]
        ),
    )


def _version_tags(package, stage: str, extra: dict[str, str] | None) -> dict[str, str]:
    lineage, metrics = package.lineage or Lineage(stage=stage), package.metrics
    tags = {
        "stage": stage,
        "package.md5": package_md5(package.path),
        "git.sha": str(lineage.git_sha or tracking.git_sha()),
        "parent.model": str(lineage.parent or "none"),
    }
    for tag, value in (
        ("lineage.mlflow_run_id", lineage.mlflow_run_id),
        ("dataset.dvc_md5", lineage.dataset_md5),
        ("parent.md5", lineage.parent_md5),
        ("parent.version", lineage.parent_version),
        ("package.dvc_md5", tracked_md5(Path(package.path))),  # pull it back by this (worldforge lineage --pull)
    ):
        if value:
            tags[tag] = str(value)
    for name in KEY_METRICS:
        if isinstance(metrics.get(name), (int, float)) and metrics[name] == metrics[name]:  # not NaN
            tags[f"metric.{name}"] = repr(float(metrics[name]))
    if metrics.get("device"):
        tags["eval.device"] = str(metrics["device"])
    tags.update({key: str(value) for key, value in (extra or {}).items() if value not in (None, "")})
    return tags


def register_package(
    package_path: str | Path,
    family: str,
    stage: str,
    tags: dict[str, str] | None = None,
    experiment: str = "worldforge",
) -> ModelVersion:
    """Register a package folder as a new version of `family` (created if new), logged by a stage
    run `register` in `experiment`. The version becomes `candidate` when its `metrics.json`
    shows it beats copy-last-frame. Returns the version, tags included."""
    package = load_package(package_path)  # validated before anything is written
    version_tags = _version_tags(package, stage, tags)
    _ensure_registered_model(family)
    requirements = [
        f"worldforge=={worldforge.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        "safetensors",
    ]
    # The run's own stage is `register`; the registered package's stage goes in `registry.stage`.
    run_tags = {key: value for key, value in version_tags.items() if key != "stage"}
    run_tags.update({"registry.family": family, "registry.stage": stage})
    with tempfile.TemporaryDirectory() as scratch, tracking.stage_run("register", experiment, tags=run_tags):
        code = Path(scratch) / "worldforge_pyfunc.py"
        code.write_text(PYFUNC_CODE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "add type hints" / "no input example": by design
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(code),
                artifacts={"package": str(Path(package.path).resolve())},
                signature=_signature(package.config),
                pip_requirements=requirements,
            )
        version = mlflow.register_model(info.model_uri, family, tags=version_tags)
    if beats_baseline(package.metrics, RegistryConfig()).status == "pass":
        client().set_registered_model_alias(family, CANDIDATE, version.version)
    return client().get_model_version(family, version.version)
