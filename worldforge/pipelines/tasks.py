"""Prefect tasks: each calls one library function.

Stage tasks are cached on their stage key (`stages.stage_key`): Prefect persists the small JSON
result (paths and hashes) under the project's Prefect home, and a rerun with the same key returns
it without running the stage. When the recorded output has disappeared from disk the flow asks for
a refresh, so a cache hit never points at nothing. Tasks retry transient failures (a tracking
server that is briefly unreachable) with exponential backoff; other errors fail at once.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.tasks import exponential_backoff

from worldforge.compression.distill.stage import distill_package
from worldforge.compression.prune.stage import prune_package
from worldforge.compression.quantize.stage import quantize_package
from worldforge.config import WorldforgeConfig
from worldforge.core.project import Project
from worldforge.data.shards import build_dataset
from worldforge.evaluation import evaluate_package
from worldforge.packages import package_md5
from worldforge.registry import RegistryError, promote, register_package, versions
from worldforge.training.pretrain import pretrain_tokenizer, pretrain_world

log = logging.getLogger(__name__)

TRANSIENT_MARKERS = ("Connection refused", "Max retries exceeded", "timed out", "Temporary failure", "503", "502")
RETRIES = 3
BACKOFF = exponential_backoff(backoff_factor=2)


def is_transient(error: BaseException) -> bool:
    """Network trouble is worth retrying; bad input, bad config and bugs are not."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(marker in str(error) for marker in TRANSIENT_MARKERS)


def retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - the state's own exception, whatever it is, re-raised by result()
        return is_transient(error)
    return False


def stage_cache_key(context, parameters: dict[str, Any]) -> str:
    """The stage key, scoped to the project: Prefect's result store may be shared by several
    projects (one PREFECT_HOME), and a result names paths and runs of one project only."""
    root = hashlib.sha256(str(Project.current().root).encode()).hexdigest()[:8]
    return f"{context.task.name}-{root}-{parameters['key']}"


def stage_task(name: str):
    """A cached, retried stage task named `name`."""
    return task(
        name=name,
        cache_key_fn=stage_cache_key,
        persist_result=True,
        result_serializer="json",
        retries=RETRIES,
        retry_delay_seconds=BACKOFF,
        retry_condition_fn=retry_transient,
    )


@stage_task("build_dataset")
def build_dataset_task(config: WorldforgeConfig, out: str, key: str) -> dict[str, str]:
    result = build_dataset(config, Path(out), track=True)
    return {"path": str(result.path), "md5": result.dvc_md5}


@stage_task("pretrain_tokenizer")
def pretrain_tokenizer_task(config: WorldforgeConfig, dataset: str, out: str, key: str) -> dict[str, str]:
    path = pretrain_tokenizer(config, Path(dataset), out_package=Path(out), progress=True)
    return {"path": str(path), "md5": package_md5(path)}


@stage_task("pretrain_world")
def pretrain_world_task(
    config: WorldforgeConfig, dataset: str, tokenizer: str | None, out: str, key: str
) -> dict[str, str]:
    path = pretrain_world(
        config,
        Path(dataset),
        tokenizer_package=Path(tokenizer) if tokenizer else None,
        out_package=Path(out),
        progress=True,  # a plain line every 100 steps / 30 s in a worker's or `make demo`'s log
    )
    return {"path": str(path), "md5": package_md5(path)}


@stage_task("distill")
def distill_task(config: WorldforgeConfig, package: str, dataset: str, out: str, key: str) -> dict[str, str]:
    path = distill_package(package, config, config.distill, Path(dataset), Path(out), track=True)
    return {"path": str(path), "md5": package_md5(path)}


@stage_task("prune")
def prune_task(config: WorldforgeConfig, package: str, dataset: str, out: str, key: str) -> dict[str, str]:
    path = prune_package(package, config, config.prune, Path(dataset), Path(out), recover=True, track=True)
    return {"path": str(path), "md5": package_md5(path)}


@stage_task("quantize")
def quantize_task(config: WorldforgeConfig, package: str, dataset: str, out: str, key: str) -> dict[str, str]:
    path = quantize_package(package, config, config.quantize, Path(dataset), Path(out), track=True)
    return {"path": str(path), "md5": package_md5(path)}


@stage_task("evaluate")
def evaluate_task(
    config: WorldforgeConfig, package: str, dataset: str, reference: str | None, key: str
) -> dict[str, Any]:
    return evaluate_package(
        package, Path(dataset), config.eval, reference=reference, track=True, experiment=config.project.experiment
    )


@task(name="register", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def register_task(config: WorldforgeConfig, package: str, stage: str, tags: dict[str, str]) -> str:
    """Register the package, or return the version that already holds it (same package md5 and
    stage), so rerunning an unchanged pipeline does not pile up identical versions."""
    md5 = package_md5(package)
    try:
        for existing, _ in versions(config.project.family):
            if existing.tags.get("package.md5") == md5 and existing.tags.get("stage") == stage:
                log.info("package %s is already version %s of %s", package, existing.version, config.project.family)
                return str(existing.version)
    except RegistryError:  # no registered model of this family yet
        pass
    version = register_package(Path(package), config.project.family, stage, tags, experiment=config.project.experiment)
    return str(version.version)


@task(name="promote", retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def promote_task(config: WorldforgeConfig, version: str) -> dict[str, Any]:
    return promote(config.project.family, version, config.registry).as_dict()
