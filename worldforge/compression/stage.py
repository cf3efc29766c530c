"""The skeleton every compression stage follows, from the CLI and from the pipeline alike.

    parent = open_parent(source, config)        a folder or models:/ URI -> package, md5, registry version
    lineage = stage_lineage(stage, parent, dataset, params)        the typed lineage.json section
    with stage_run(track, stage, config, section, lineage):        the MLflow stage run (id -> lineage)
        ... compress (the stage's own work) ... save_package(out, ..., lineage, ...)
        publish(out, record)                                      metrics, package artifact, DVC md5 tag
    outcome = finish(out, parent, dataset, config, stage)         evaluate against the parent on the
                                                                  same episodes -> register (stage
                                                                  tag) -> offer to the gates

`distill`, `prune` and `quantize` each do the part between; the pipeline runs `finish`'s three
steps as cached tasks of its own (`pipelines/tasks.py`) with the same functions and tags.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worldforge.config import WorldforgeConfig, flatten
from worldforge.core import tracking
from worldforge.core.lineage import tracked_md5, version_package
from worldforge.evaluation import evaluate_package
from worldforge.packages import ModelPackage, load_package, package_md5
from worldforge.packages.lineage import Lineage, project_path
from worldforge.registry import promote, register_package, resolve, version_of


@dataclass
class Parent:
    """The package a stage starts from."""

    source: str  # as given: a folder or a models:/ URI
    package: ModelPackage
    md5: str
    version: str | None  # models:/family/N when the registry holds it


@dataclass
class Outcome:
    """What `finish` did: the evaluated package, its registry version and the gate decision."""

    path: Path
    metrics: dict[str, Any]
    version: str | None = None
    decision: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


def open_parent(source: str | Path, config: WorldforgeConfig, track: bool = True) -> Parent:
    """Resolve, load and identify the parent package (registry lookup only with `track`)."""
    package = load_package(resolve(source))
    md5 = package_md5(package.path)
    # A URI names its version; a folder's is looked up by md5 (only where there is a registry).
    known = track or str(source).startswith("models:/")
    version = version_of(str(source), md5, config.project.family) if known else None
    return Parent(str(source), package, md5, version)


def stage_lineage(stage: str, parent: Parent, dataset: str | Path, params: dict[str, Any]) -> Lineage:
    """The lineage of a stage's output: its parent, the dataset and the stage's own parameters."""
    return Lineage(
        stage=stage,
        parent=project_path(parent.source),
        parent_md5=parent.md5,
        parent_version=parent.version,
        dataset=project_path(dataset),
        dataset_md5=tracked_md5(Path(dataset)),
        git_sha=tracking.git_sha(),
        params=params,
    )


@contextlib.contextmanager
def stage_run(
    track: bool, stage: str, config: WorldforgeConfig, section: BaseModel, lineage: Lineage, **tags: str
) -> Iterator[str | None]:
    """The MLflow stage run of `stage` (nested under an active run): the root config and the
    stage's section as params, lineage as tags; its id goes into `lineage.mlflow_run_id`."""
    params = {
        **config.flat(),
        **flatten(section.model_dump(mode="json"), f"{stage}."),
        **flatten(lineage.params, f"{stage}."),
    }
    run_tags = {
        "parent.model": lineage.parent or "none",
        "parent.md5": lineage.parent_md5 or "",
        "dataset.dvc_md5": lineage.dataset_md5 or "untracked",
        **({"parent.version": lineage.parent_version} if lineage.parent_version else {}),
        **tags,
    }
    with tracking.optional_stage_run(track, stage, config.project.experiment, params, run_tags) as run_id:
        lineage.mlflow_run_id = run_id
        yield run_id


def publish(out: Path, metrics: dict[str, float]) -> None:
    """Inside the stage run: its metrics, the package as an artifact, the package's DVC md5."""
    tracking.log_metrics(metrics)
    tracking.log_artifacts(out, "package")
    tracking.set_tags({"package.dvc_md5": version_package(out) or "untracked"})


def finish(
    path: str | Path,
    parent: str,
    dataset: str | Path,
    config: WorldforgeConfig,
    stage: str,
    stage_tags: dict[str, str] | None = None,
    track: bool = True,
    offer: bool = True,
    reference_steps: int | None = None,
) -> Outcome:
    """Evaluate the stage's output against its parent on the same held-out episodes, register it
    (stage tag `stage`, with `track`) and offer it to the promotion gates (with `offer`): the
    decision, promoted or not, is recorded on the version with every check."""
    path = Path(path)
    metrics = evaluate_package(
        path,
        dataset,
        config.eval,
        reference=parent,
        reference_steps=reference_steps,
        track=track,
        experiment=config.project.experiment,
    )
    outcome = Outcome(path, metrics)
    if not track:
        return outcome
    # parent.md5 / parent.version tags come from the package's lineage (registry.publish)
    registered = register_package(path, config.project.family, stage, stage_tags, experiment=config.project.experiment)
    outcome.version = str(registered.version)
    if offer:
        decision = promote(config.project.family, outcome.version, config.registry).as_dict()
        outcome.decision = decision
        outcome.checks = decision.get("checks", [])
    return outcome


def compress_and_finish(
    compress: Callable[..., Path],
    stage: str,
    *,
    source: str,
    config: WorldforgeConfig,
    dataset_path: str | Path,
    track: bool = True,
    offer: bool = True,
    details: Callable[[Path], tuple[dict[str, str], int | None]] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A stage end to end, as `worldforge compress STAGE` runs it: `compress(source=..., config=...,
    dataset_path=..., track=..., **kwargs)` writes the package, then `finish` evaluates it against
    `source`, registers it and offers it to the gates. `details(path)` gives the stage's own
    version tags and the reference's step count. Under a launcher every rank compresses and rank
    0 alone finishes. Returns {"path", "metrics", "version", "decision"} (None where not done)."""
    path = Path(compress(source=source, config=config, dataset_path=dataset_path, track=track, **kwargs))
    if int(os.environ.get("RANK", "0")) != 0:  # the other ranks of a launcher only compress
        return {"path": str(path), "metrics": {}, "version": None, "decision": None}
    tags, reference_steps = details(path) if details else ({}, None)
    outcome = finish(path, source, dataset_path, config, stage, tags, track, offer, reference_steps)
    return {"path": str(path), "metrics": outcome.metrics, "version": outcome.version, "decision": outcome.decision}
