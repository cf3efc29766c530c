"""The one place that talks to MLflow tracking.

Embedded default: a SQLite store `<root>/mlflow.db` with artifacts under `<root>/mlartifacts`;
`MLFLOW_TRACKING_URI` overrides it (an MLflow server for a team). A pipeline run is one parent run
with a nested run per stage; each stage run carries the resolved config as params and the standard
tags `stage`, `git.sha`, `dataset.dvc_md5`, `parent.model`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from worldforge.core.project import Project

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value (recent versions); longer values are cut


def tracking_uri(project: Project | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the project's embedded SQLite store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    project = project or Project.current()
    return f"sqlite:///{project.mlflow_db}"


def configure(project: Project | None = None) -> str:
    """Point the mlflow client (tracking and registry) at the project's store; returns the URI."""
    import mlflow

    project = project or Project.current()
    uri = tracking_uri(project)
    if uri.startswith("sqlite:///"):
        project.root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str, project: Project | None = None) -> str:
    """The id of experiment `name`, created with artifacts under the project root if new.

    Call this in the parent process before launching workers: several processes creating the
    same experiment in one SQLite store race."""
    import mlflow
    from mlflow.exceptions import MlflowException

    project = project or Project.current()
    configure(project)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri(project).startswith("sqlite:///"):
        location = project.mlflow_artifacts.as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        return client.get_experiment_by_name(name).experiment_id


def git_sha(path: Path | None = None) -> str:
    """The commit of the worldforge source checkout (or `path`), `unknown` outside git."""
    path = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    cleaned = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items()}
    items = list(cleaned.items())
    for start in range(0, len(items), 100):  # the batch API takes at most 100 params per call
        mlflow.log_params(dict(items[start : start + 100]))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics; non-finite values are logged too (MLflow stores them), None skipped."""
    import mlflow

    values = {key: float(value) for key, value in metrics.items() if value is not None}
    if values:
        mlflow.log_metrics(values, step=step)


@contextlib.contextmanager
def pipeline_run(
    experiment: str, run_name: str, tags: Mapping[str, str] | None = None, project: Project | None = None
) -> Iterator[Any]:
    """The parent run of one pipeline run; stage runs opened inside it nest under it."""
    import mlflow

    experiment_id = ensure_experiment(experiment, project)
    all_tags = {"git.sha": git_sha(), "worldforge.kind": "pipeline", **(tags or {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags) as run:
        yield run


@contextlib.contextmanager
def optional_stage_run(
    track: bool, stage: str, experiment: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> Iterator[str | None]:
    """`stage_run` yielding its run id when `track`, else nothing at all (None): the stage run of a
    library call that can be tracked or not (rank 0 of a launcher tracks, the others do not)."""
    if not track:
        yield None
        return
    with stage_run(stage, experiment, params, tags) as run:
        yield run.info.run_id


@contextlib.contextmanager
def stage_run(
    stage: str,
    experiment: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    project: Project | None = None,
    log_system_metrics: bool = False,
    parent_run_id: str | None = None,
) -> Iterator[Any]:
    """A run for one stage: nested under the active (or given) parent run, else top level.

    Tags `stage` and `git.sha` are always set; pass `dataset.dvc_md5`, `parent.model` in `tags`.
    """
    import mlflow

    experiment_id = ensure_experiment(experiment, project)
    active = mlflow.active_run()
    parent = parent_run_id or (active.info.run_id if active else None)
    all_tags = {"stage": stage, "git.sha": git_sha(), **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage,
        nested=active is not None,
        tags=all_tags,
        log_system_metrics=log_system_metrics,
    ) as run:
        if params:
            log_params(params)
        yield run


def log_artifacts(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def set_tags(tags: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({key: str(value) for key, value in tags.items()})
