"""Pretraining stages, the library entry points the flows and the CLI call:

    pretrain_tokenizer(config, dataset) -> package path (None for the weightless patch tokenizer)
    pretrain_world(config, dataset, tokenizer_package=None) -> package path

Each is one MLflow stage run (nested under the active run, if any; opened by rank 0 only) around
one `Trainer.fit`. Out comes a model package (docs/design.md): consolidated from the ZeRO checkpoint,
tracked in DVC and pushed, logged as an artifact with its md5 and the dataset's md5 as tags.
Run the same call under `torchrun`/`deepspeed` for several processes; every rank returns the path.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from worldforge.config import WorldforgeConfig
from worldforge.core import tracking
from worldforge.core.lineage import DataRepo, tracked_md5
from worldforge.core.project import Project
from worldforge.core.runtime import seed_everything
from worldforge.errors import WorldforgeError
from worldforge.models.config import TokenizerConfig
from worldforge.models.world_model import WorldModel
from worldforge.packages import load_package, package_md5
from worldforge.packages.lineage import Lineage, project_path
from worldforge.training.deepspeed_config import read_deepspeed_file, resolve_deepspeed_file
from worldforge.training.launch import setup_distributed
from worldforge.training.tasks import tokenizer_task, world_task
from worldforge.training.trainer import Task, Trainer, TrainingInterrupted

log = logging.getLogger(__name__)


def default_package(config: WorldforgeConfig, stage: str, project: Project | None = None) -> Path:
    return (project or Project.current()).packages / f"{config.project.family}-{stage}"


def _check_under_root(path: Path, project: Project) -> None:
    if not Path(path).resolve().is_relative_to(project.root):
        raise WorldforgeError(
            f"{path} is outside the project root {project.root}: model packages are tracked with DVC, which "
            "only tracks folders under the root (set WORLDFORGE_ROOT, or write under <root>/packages)"
        )


def build_model(config: WorldforgeConfig, tokenizer_package: Path | None = None) -> WorldModel:
    """The world model to pretrain: the configured DiT (seeded init) on the configured tokenizer, or
    on the pretrained tokenizer of `tokenizer_package` (its config and weights win)."""
    seed_everything(config.project.seed)  # every rank builds the same initial weights
    if tokenizer_package is None:
        if config.tokenizer.kind != "patch":
            raise WorldforgeError(
                f"tokenizer.kind={config.tokenizer.kind!r} must be pretrained before the world model: run "
                "`worldforge train tokenizer` and pass its package (--tokenizer PATH / tokenizer_package=)"
            )
        return WorldModel(config.tokenizer, config.model, config.objective, config.sampler)
    package = load_package(tokenizer_package)
    tokenizer_cfg = TokenizerConfig.model_validate(package.config["tokenizer"])
    if tokenizer_cfg != config.tokenizer:
        log.warning(
            "using the tokenizer config of %s, which differs from the config's tokenizer section",
            tokenizer_package,
        )
    model = WorldModel(tokenizer_cfg, config.model, config.objective, config.sampler)
    state = {k.removeprefix("tokenizer."): v for k, v in package.state.items() if k.startswith("tokenizer.")}
    model.tokenizer.load_state_dict(state, strict=True)
    return model


def run_stage(
    stage: str,
    config: WorldforgeConfig,
    dataset: Path,
    make_task,
    *,
    steps: int,
    lr: float,
    out_package: Path | None,
    resume: bool,
    progress: bool,
    parent: dict[str, Any] | None = None,
) -> Path:
    """Train `make_task(rank, world_size) -> Task` for `steps` steps and write its package."""
    project = Project.current()
    dataset = Path(dataset).resolve()
    out = Path(out_package or default_package(config, stage, project)).resolve()
    _check_under_root(out, project)
    read_deepspeed_file(resolve_deepspeed_file(config.train.deepspeed))  # a bad config fails before any work
    info, _ = setup_distributed(config.train.device)
    task: Task = make_task(info.rank, info.world_size)
    checkpoints = config.train.checkpoint_dir or project.checkpoints / out.name
    dataset_md5 = tracked_md5(dataset)
    tags = {"dataset.dvc_md5": dataset_md5 or "untracked", "parent.model": (parent or {}).get("md5", "")}
    run_context = (
        tracking.stage_run(
            stage,
            config.project.experiment,
            params=config.flat(),
            tags=tags,
            project=project,
            log_system_metrics=config.train.system_metrics,
        )
        if info.is_main
        else contextlib.nullcontext()
    )
    with run_context as run:
        trainer = Trainer(
            task,
            config.train,
            steps=steps,
            lr=lr,
            seed=config.project.seed,
            checkpoint_dir=Path(checkpoints),
            track=info.is_main,
            progress=progress,
        )
        if info.is_main:
            _log_engine(trainer, stage)
        try:
            result = trainer.fit(resume=resume)
        except TrainingInterrupted as stopped:
            if info.is_main:
                tracking.set_tags({"stopped": stopped.signal, "checkpoint": str(stopped.checkpoint)})
            raise
        lineage = Lineage(
            stage=stage,
            parent=project_path((parent or {}).get("path")),
            parent_md5=(parent or {}).get("md5"),
            dataset=project_path(dataset),
            dataset_md5=dataset_md5,
            git_sha=tracking.git_sha(),
            mlflow_run_id=run.info.run_id if run is not None else None,
            params={
                "steps": result.step,
                "stopped": result.stopped,
                "world_size": info.world_size,
                "checkpoint": project_path(result.checkpoint),
            },
        )
        metrics = {k.removeprefix("val/"): v for k, v in result.metrics.items()}
        if result.losses:
            metrics["train_loss"] = sum(result.losses[-10:]) / len(result.losses[-10:])
        trainer.export_package(out, lineage, metrics)
        if info.is_main:
            _track_package(out, result, stage)
    return out


def _log_engine(trainer: Trainer, stage: str) -> None:
    import tempfile

    tracking.log_params(
        {
            "engine.zero_stage": trainer.zero_stage,
            "engine.world_size": trainer.world,
            "engine.precision": trainer.precision,
            "engine.device": str(trainer.device),
            "engine.steps": trainer.steps,
            "engine.trainable_parameters": sum(
                p.numel() for p in trainer.task.objective.parameters() if p.requires_grad
            ),
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"deepspeed-{stage}.json"
        path.write_text(json.dumps(trainer.ds_config, indent=2))
        tracking.log_artifacts(path)


def _track_package(out: Path, result, stage: str) -> None:
    md5 = DataRepo().track_and_push(out)
    tracking.log_artifacts(out, "package")
    tracking.set_tags({"package.dvc_md5": md5, "package.path": str(out), "stopped": result.stopped})
    tracking.log_metrics({"final/steps": result.step, "final/nonfinite_skipped": result.nonfinite_skipped})
    log.info("%s package %s (dvc md5 %s)", stage, out, md5)


def pretrain_tokenizer(
    config: WorldforgeConfig,
    dataset_path: Path,
    out_package: Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> Path | None:
    """Train the `vae` tokenizer on the dataset's train split for `train.tokenizer_steps` steps.

    Returns its package (a world_model package whose DiT is untrained), or None for the patch
    tokenizer, which has no weights (the stage is skipped)."""
    if config.tokenizer.kind == "patch":
        log.info("tokenizer.kind=patch has no weights: nothing to pretrain")
        return None
    seed_everything(config.project.seed)  # every rank builds the same initial weights
    model = WorldModel(config.tokenizer, config.model, config.objective, config.sampler)

    def make_task(rank: int, world_size: int) -> Task:
        return tokenizer_task(config, model, Path(dataset_path), rank, world_size)

    return run_stage(
        "pretrain_tokenizer",
        config,
        Path(dataset_path),
        make_task,
        steps=config.train.tokenizer_steps,
        lr=config.train.tokenizer_lr,
        out_package=out_package,
        resume=resume,
        progress=progress,
    )


def pretrain_world(
    config: WorldforgeConfig,
    dataset_path: Path,
    tokenizer_package: Path | None = None,
    out_package: Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> Path:
    """Train the world DiT on the dataset's train split for `train.steps` steps, on the frozen
    tokenizer of `tokenizer_package` (required for a `vae` tokenizer). Returns the package path."""
    model = build_model(config, tokenizer_package)
    parent = None
    if tokenizer_package is not None:
        parent = {"path": str(tokenizer_package), "md5": package_md5(tokenizer_package)}

    def make_task(rank: int, world_size: int) -> Task:
        return world_task(config, model, Path(dataset_path), rank, world_size)

    return run_stage(
        "pretrain_world",
        config,
        Path(dataset_path),
        make_task,
        steps=config.train.steps,
        lr=config.train.lr,
        out_package=out_package,
        resume=resume,
        progress=progress,
        parent=parent,
    )
