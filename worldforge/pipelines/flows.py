"""Prefect flows: one per stage, and `train_and_compress`, which chains them.

Flows read like the pipeline diagram; every piece of work is a task that calls one library
function (`tasks.py`). Parameters are plain strings and lists (a preset name or YAML path, dotted
overrides, the project root) so that deployments can carry them; the config is resolved and
validated once at the start of a flow, and a bad one fails the flow with the config's own message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from worldforge.config import WorldforgeConfig, load_config
from worldforge.core import tracking
from worldforge.core.project import Project
from worldforge.packages import package_md5
from worldforge.pipelines import stages
from worldforge.pipelines.tasks import (
    build_dataset_task,
    distill_task,
    evaluate_task,
    pretrain_tokenizer_task,
    pretrain_world_task,
    promote_task,
    prune_task,
    quantize_task,
    register_task,
)
from worldforge.registry import download_package

COMPRESSION_TASKS = {"distill": distill_task, "prune": prune_task, "quantize": quantize_task}


def setup(preset: str, overrides: list[str] | None, root: str | None) -> tuple[Project, WorldforgeConfig]:
    """Resolve the project root and the config; the root is exported so library calls agree."""
    project = Project.current(root)
    os.environ["WORLDFORGE_ROOT"] = str(project.root)
    config = load_config(preset, overrides or [])
    tracking.configure(project)
    return project, config


def run_stage(stage_task, stage: str, config: WorldforgeConfig, out: Path, inputs: dict[str, str], **kwargs):
    """Run a cached stage task whose output goes to `out`; returns (result, was_cached).

    Prefect's cache is refreshed when the output folder is gone or incomplete, so a cache hit
    always names an output that exists."""
    complete = stages.package_complete(out) or stages.dataset_complete(out)
    key = stages.stage_key(stage, config, inputs)
    state = stage_task.with_options(refresh_cache=True if not complete else None)(
        config=config, out=str(out), key=key, return_state=True, **kwargs
    )
    result = state.result()
    cached = state.name == "Cached"
    get_run_logger().info("%s %s", stages.describe(stage, key, inputs), "cached" if cached else "done")
    return result, cached


def stage_output(project: Project, config: WorldforgeConfig, stage: str, inputs: dict[str, str]) -> Path:
    key = stages.stage_key(stage, config, inputs)
    if stage == "build_dataset":
        return stages.dataset_dir(project, config, key)
    return stages.package_dir(project, config, stage, key)


def dataset_stage(project: Project, config: WorldforgeConfig) -> tuple[dict[str, str], bool]:
    out = stage_output(project, config, "build_dataset", {})
    return run_stage(build_dataset_task, "build_dataset", config, out, {})


def world_stages(project: Project, config: WorldforgeConfig, dataset: dict[str, str]) -> dict[str, Any]:
    """Tokenizer (skipped for the parameter-free patch tokenizer), then the world model."""
    cached: dict[str, bool] = {}
    tokenizer_path, tokenizer_md5 = None, ""
    if config.tokenizer.kind != "patch":
        inputs = {"dataset": dataset["md5"]}
        out = stage_output(project, config, "pretrain_tokenizer", inputs)
        tokenizer, cached["pretrain_tokenizer"] = run_stage(
            pretrain_tokenizer_task, "pretrain_tokenizer", config, out, inputs, dataset=dataset["path"]
        )
        tokenizer_path, tokenizer_md5 = tokenizer["path"], tokenizer["md5"]
    inputs = {"dataset": dataset["md5"], "tokenizer": tokenizer_md5}
    out = stage_output(project, config, "pretrain_world", inputs)
    world, cached["pretrain_world"] = run_stage(
        pretrain_world_task, "pretrain_world", config, out, inputs, dataset=dataset["path"], tokenizer=tokenizer_path
    )
    return {"world": world, "cached": cached}


def evaluate_stage(
    config: WorldforgeConfig, package: dict[str, str], dataset: dict[str, str], reference: dict[str, str] | None = None
) -> tuple[dict[str, Any], bool]:
    inputs = {"package": package["md5"], "dataset": dataset["md5"], "reference": (reference or {}).get("md5", "")}
    key = stages.stage_key("evaluate", config, inputs)
    state = evaluate_task(
        config=config,
        package=package["path"],
        dataset=dataset["path"],
        reference=(reference or {}).get("path"),
        key=key,
        return_state=True,
    )
    return state.result(), state.name == "Cached"


def register_and_promote(
    config: WorldforgeConfig, package: dict[str, str], stage: str, dataset_md5: str, parent: str = ""
) -> dict[str, Any]:
    tags = {"dataset.dvc_md5": dataset_md5, "parent.model": parent}
    version = register_task(config, package["path"], stage, tags)
    outcome: dict[str, Any] = {"version": version}
    if config.pipeline.promote:
        outcome["decision"] = promote_task(config, version)
    return outcome


def compression_stages(
    project: Project, config: WorldforgeConfig, world: dict[str, Any], dataset: dict[str, str]
) -> list[dict[str, Any]]:
    """`pipeline.compress` in order: each stage takes the previous package, is evaluated against it
    (same episodes, same run), registered with it as parent and offered for promotion."""
    produced, parent = [], world
    for stage in config.pipeline.compress:
        inputs = {"package": parent["md5"], "dataset": dataset["md5"]}
        out = stage_output(project, config, stage, inputs)
        package, cached = run_stage(
            COMPRESSION_TASKS[stage], stage, config, out, inputs, package=parent["path"], dataset=dataset["path"]
        )
        metrics, eval_cached = evaluate_stage(config, package, dataset, reference=parent)
        registry = register_and_promote(config, package, stage, dataset["md5"], parent=parent["md5"])
        produced.append(
            {"stage": stage, "package": package, "metrics": metrics, "cached": cached and eval_cached, **registry}
        )
        parent = package
    return produced


@flow(name="build_dataset", log_prints=True)
def build_dataset_flow(preset: str = "quickstart", overrides: list[str] | None = None, root: str | None = None) -> dict:
    """Build (or find) the dataset of a config, tracked in DVC and pushed to the remote."""
    project, config = setup(preset, overrides, root)
    result, _ = dataset_stage(project, config)
    return result


@flow(name="pretrain_world", log_prints=True)
def pretrain_world_flow(preset: str = "quickstart", overrides: list[str] | None = None, root: str | None = None) -> dict:
    """Dataset, tokenizer and world-model pretraining, each cached on its inputs."""
    project, config = setup(preset, overrides, root)
    dataset, _ = dataset_stage(project, config)
    return world_stages(project, config, dataset)["world"]


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model: str,
    reference: str | None = None,
    preset: str = "quickstart",
    overrides: list[str] | None = None,
    root: str | None = None,
) -> dict:
    """Evaluate a package folder or `models:/` URI (and a reference) on the config's held-out episodes."""
    project, config = setup(preset, overrides, root)
    dataset, _ = dataset_stage(project, config)

    def identify(source: str) -> dict[str, str]:
        path = download_package(source) if source.startswith("models:/") else Path(source)
        return {"path": str(path), "md5": package_md5(path)}

    metrics, _ = evaluate_stage(config, identify(model), dataset, identify(reference) if reference else None)
    return metrics


@flow(name="promote", log_prints=True)
def promote_flow(
    version: str, preset: str = "quickstart", overrides: list[str] | None = None, root: str | None = None
) -> dict:
    """Check the config's gates for version `version` of the config's family and move `champion`
    if they pass."""
    _, config = setup(preset, overrides, root)
    return promote_task(config, version)


@flow(name="train_and_compress", log_prints=True)
def train_and_compress(preset: str = "quickstart", overrides: list[str] | None = None, root: str | None = None) -> dict:
    """The end-to-end pipeline: dataset -> tokenizer -> world model -> evaluate -> register ->
    promote, then each compression stage of `pipeline.compress` (distill, prune, quantize) -> evaluate
    against its parent -> register -> promote.

    One MLflow parent run holds a nested run per stage that ran; stages whose inputs did not change
    are taken from the cache and recorded as such on the parent run."""
    project, config = setup(preset, overrides, root)
    run_name = f"{config.project.name}-{flow_run.get_name() or 'local'}"
    with tracking.pipeline_run(config.project.experiment, run_name, project=project) as run:
        dataset, dataset_cached = dataset_stage(project, config)
        trained = world_stages(project, config, dataset)
        world = trained["world"]
        metrics, eval_cached = evaluate_stage(config, world, dataset)
        registry = register_and_promote(config, world, "pretrain", dataset["md5"])
        compressed = compression_stages(project, config, world, dataset)
        cached = {"build_dataset": dataset_cached, **trained["cached"], "evaluate": eval_cached}
        cached.update({entry["stage"]: entry["cached"] for entry in compressed})
        tracking.set_tags({f"cached.{stage}": value for stage, value in cached.items()})
        tracking.set_tags({"dataset.dvc_md5": dataset["md5"], "package.md5": world["md5"]})
        return {
            "mlflow_run_id": run.info.run_id,
            "dataset": dataset,
            "world": world,
            "metrics": metrics,
            "cached": cached,
            "compressed": compressed,
            **registry,
        }
