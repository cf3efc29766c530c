"""Distillation: a world-model package (the teacher) in, a cheaper student package out.

    progressive   rounds of ProgressiveObjective, each halving the steps     distill_steps.py
    consistency   one run of ConsistencyObjective to `steps` segments        distill_steps.py
    student       a smaller DiT from the teacher's features and velocity     distill_student.py

Every method trains on the shared DeepSpeed `Trainer` (checkpoints, resume, EMA, MLflow metrics,
validation rollouts at the student's steps) on the dataset's train split, as pretraining does
(`training.tasks.train_batches`). The student package's config records its `sampler.steps`, its
lineage.json names the teacher (folder or `models:/` URI, its package md5 and registry version),
and distillation.json holds the run: method, schedule, per-round losses and validations.
`distill_and_register` (the CLI's flow) then evaluates the student with the teacher as the
reference on the same held-out episodes and registers it as a version of stage `distill`.

The step-distillation students start as a copy of the teacher (the tokenizer is never trained).
Progressive rounds are separate trainer runs with their own checkpoint folders, so resuming an
interrupted distillation replays finished rounds from their last checkpoint and continues the
interrupted one where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from worldforge.compression.distill_config import DistillConfig, DistillConfigError, check_schedule
from worldforge.models.world_model import WorldModel, package_config
from worldforge.platform.config import WorldforgeConfig, flatten
from worldforge.platform.lineage import tracked_md5, version_package

DISTILLATION_FILE = "distillation.json"
STAGE = "distill"


def with_steps(model: WorldModel, steps: int) -> WorldModel:
    """A copy of `model` whose sampler takes `steps` steps."""
    copied = copy.deepcopy(model)
    copied.sampler_cfg = model.sampler_cfg.model_copy(update={"steps": steps})
    return copied


def check_teacher(package, source: str) -> None:
    """Refuse packages that are not a trained, unquantized world model, naming the field."""
    where = f"--teacher {source}"
    if package.kind != "world_model":
        raise DistillConfigError(f"{where}: config.json kind is {package.kind!r}, expected 'world_model'")
    if "quantization" in package.config:
        raise DistillConfigError(
            f"{where}: config.json has a 'quantization' section; distill from the unquantized package "
            "(distill before quantize)"
        )
    if package.lineage.get("stage") == "pretrain_tokenizer":
        raise DistillConfigError(
            f"{where}: lineage.json stage is 'pretrain_tokenizer': its DiT is untrained; distill a "
            "pretrain_world (or later) package"
        )


def distill_package(
    source: str | Path,
    config: WorldforgeConfig,
    distill_cfg: DistillConfig,
    dataset_path: str | Path,
    out: str | Path,
    track: bool = False,
    resume: bool = False,
) -> Path:
    """Distill the package at `source` (folder or `models:/` URI) into a student written to `out`.

    config: the root config (`data` reads the clips, `train` runs the trainer: micro-batch, engine,
    EMA, checkpoints, validation; `project` gives the seed and the MLflow experiment).
    distill_cfg: the `distill` section. resume: continue from the checkpoints of an interrupted
    run with the same `out` (and config). track: record an MLflow stage run `distill` (progressive
    rounds as nested runs `distill_round`).
    Raises DistillConfigError (bad --steps / teacher / student shape), TrainingInterrupted.
    Returns `out`. Under a launcher every rank calls this; rank 0 writes the package."""
    from worldforge.platform.packages import load_package, package_md5
    from worldforge.platform.project import Project
    from worldforge.platform.tracking import git_sha
    from worldforge.training.launch import barrier, setup_distributed
    from worldforge.training.tasks import check_dataset

    out, dataset = Path(out), Path(dataset_path)
    info, device = setup_distributed(config.train.device)
    package = load_package(source)
    check_teacher(package, str(source))
    teacher = package.build(device)
    check_dataset(teacher, dataset)
    teacher_steps = distill_cfg.teacher_steps or teacher.sampler_cfg.steps
    schedule = check_schedule(distill_cfg, teacher_steps)
    lineage: dict[str, Any] = {
        "stage": STAGE,
        "method": distill_cfg.method,
        "parent": str(source),
        "parent_md5": package_md5(package.path),
        "parent_version": _registry_version(str(source)),
        "teacher_steps": teacher_steps,
        "steps": distill_cfg.steps,
        "dataset": str(dataset.resolve()),
        "dataset_md5": tracked_md5(dataset),
        "git_sha": git_sha(),
    }
    checkpoints = Path(config.train.checkpoint_dir or Project.current().checkpoints / out.name)
    run = _Run(config, distill_cfg, dataset, checkpoints, track and info.is_main, resume)
    with _stage_run(run.track, config, distill_cfg, lineage) as run_id:
        lineage["mlflow_run_id"] = run_id
        if distill_cfg.method == "progressive":
            student, rounds = _progressive(run, teacher, teacher_steps, schedule)
        elif distill_cfg.method == "consistency":
            student, rounds = _consistency(run, teacher, teacher_steps)
        else:
            student, rounds = _smaller(run, teacher)
        record = {
            "config": distill_cfg.model_dump(mode="json"),
            "teacher_steps": teacher_steps,
            "schedule": schedule,
            "rounds": rounds,
            "before": _cost(teacher, teacher_steps),
            "after": _cost(student, distill_cfg.steps),
        }
        if info.is_main:
            _write(out, student, lineage, record)
            if run.track:
                _log(out, record)
    barrier()
    return out


class _Run:
    """What every trainer run of one distillation shares."""

    def __init__(self, config, distill_cfg, dataset, checkpoints, track, resume):
        self.config, self.distill_cfg, self.dataset = config, distill_cfg, dataset
        self.checkpoints, self.track, self.resume = checkpoints, track, resume

    def train(
        self,
        name: str,
        objective: nn.Module,
        student: WorldModel,
        prefix: str,
        folder: str,
        seed_offset: int = 0,
    ) -> tuple[WorldModel, dict[str, Any]]:
        """Train `objective` (whose submodule at `prefix` is `student`) for `train_steps` steps.
        Returns the trained student (the package weights: EMA when enabled) and the run's record."""
        from worldforge.training.tasks import train_student

        return train_student(
            name,
            objective,
            student,
            prefix,
            self.config,
            self.dataset,
            steps=self.distill_cfg.train_steps,
            lr=self.distill_cfg.lr,
            seed=self.config.project.seed + seed_offset,
            checkpoint_dir=self.checkpoints / folder,
            track=self.track,
            resume=self.resume,
        )


def _progressive(
    run: _Run, teacher: WorldModel, teacher_steps: int, schedule: list[int]
) -> tuple[WorldModel, list[dict[str, Any]]]:
    from worldforge.compression.distill_steps import ProgressiveObjective

    current, rounds = with_steps(teacher, teacher_steps), []
    for index, steps in enumerate(schedule):
        student = with_steps(current, steps)  # initialised from the previous round's student
        objective = ProgressiveObjective(student, current, steps)
        with _round_run(run.track, run.config, index, steps):
            current, record = run.train(
                "distill_progressive", objective, student, "model.", f"round{index}-steps{steps}", index
            )
        rounds.append({"round": index, "teacher_steps": 2 * steps, "student_steps": steps, **record})
    return current, rounds


def _consistency(
    run: _Run, teacher: WorldModel, teacher_steps: int
) -> tuple[WorldModel, list[dict[str, Any]]]:
    from worldforge.compression.distill_steps import ConsistencyObjective

    steps = run.distill_cfg.steps
    student = with_steps(teacher, steps)
    objective = ConsistencyObjective(student, teacher, steps, teacher_steps)
    trained, record = run.train(
        "distill_consistency", objective, student, "model.", f"consistency-steps{steps}"
    )
    return trained, [{"round": 0, "teacher_steps": teacher_steps, "student_steps": steps, **record}]


def _smaller(run: _Run, teacher: WorldModel) -> tuple[WorldModel, list[dict[str, Any]]]:
    from worldforge.compression.distill_student import StudentObjective, build_student

    steps = run.distill_cfg.steps
    student = with_steps(build_student(teacher, run.distill_cfg.student, run.config.project.seed), steps)
    student.to(next(teacher.dit.parameters()).device)
    objective = StudentObjective(student, teacher, run.distill_cfg.student)
    trained, record = run.train("distill_student", objective, student, "kd.model.", f"student-steps{steps}")
    shape = trained.model_cfg
    return trained, [{"round": 0, "student_depth": shape.depth, "student_width": shape.width, **record}]


def _registry_version(source: str) -> str | None:
    """`models:/name/version` of a registry source (an alias resolved), else None."""
    if not source.startswith("models:/"):
        return None
    from worldforge.platform.registry import resolve_version

    version = resolve_version(source)
    return f"models:/{version.name}/{version.version}"


def _cost(model: WorldModel, steps: int) -> dict[str, float]:
    from worldforge.models.flops import count_parameters, rollout_flops

    flops = rollout_flops(model, steps=steps)
    return {
        "parameters": count_parameters(model),
        "parameters_dit": count_parameters(model.dit),
        "denoise_steps": steps,
        "flops_per_frame": flops["total"],
        "flops_per_frame_denoise": flops["denoise"],
    }


def _stage_run(
    track: bool, config: WorldforgeConfig, distill_cfg: DistillConfig, lineage: dict[str, Any]
) -> contextlib.AbstractContextManager[str | None]:
    """The MLflow stage run `distill` (its id), or nothing (None) without tracking."""
    from worldforge.platform import tracking

    params = {**config.flat(), **flatten(distill_cfg.model_dump(mode="json"), "distill.")}
    params["distill.teacher_steps"] = lineage["teacher_steps"]
    tags = {
        "parent.model": lineage["parent"],
        "parent.md5": lineage["parent_md5"],
        "dataset.dvc_md5": lineage["dataset_md5"] or "untracked",
        "distill.method": distill_cfg.method,
    }
    if lineage["parent_version"]:
        tags["parent.version"] = lineage["parent_version"]
    return tracking.optional_stage_run(track, STAGE, config.project.experiment, params, tags)


@contextlib.contextmanager
def _round_run(track: bool, config: WorldforgeConfig, index: int, steps: int) -> Iterator[None]:
    """A nested MLflow run per progressive round, so each round's loss curve has its own steps."""
    if not track:
        yield
        return
    from worldforge.platform import tracking

    tags = {"distill.round": str(index), "distill.student_steps": str(steps)}
    with tracking.stage_run("distill_round", config.project.experiment, tags=tags):
        yield


def _log(out: Path, record: dict[str, Any]) -> None:
    from worldforge.platform import tracking

    for section in ("before", "after"):
        tracking.log_metrics({f"{section}.{key}": value for key, value in record[section].items()})
    last = record["rounds"][-1]
    if last["loss_last"] is not None:
        tracking.log_metrics(
            {"distill.loss_first": record["rounds"][0]["loss_first"], "distill.loss_last": last["loss_last"]}
        )
    tracking.log_artifacts(out, "package")
    tracking.set_tags({"package.dvc_md5": version_package(out) or "untracked"})


def _write(out: Path, model: WorldModel, lineage: dict[str, Any], record: dict[str, Any]) -> Path:
    from worldforge.platform.packages import save_package

    with tempfile.TemporaryDirectory() as scratch:
        details = Path(scratch) / DISTILLATION_FILE
        details.write_text(json.dumps(record, indent=2, sort_keys=True, default=float))
        return save_package(
            out, package_config(model), model, lineage, record["after"], extras={DISTILLATION_FILE: details}
        )


def distill_and_register(
    teacher: str,
    config: WorldforgeConfig,
    distill_cfg: DistillConfig,
    dataset_path: str | Path,
    out: str | Path,
    resume: bool = False,
    track: bool = True,
    register: bool = True,
) -> dict[str, Any]:
    """The `compress distill` stage end to end: distill, evaluate the student with the teacher as
    the reference (teacher at its distilled-from step count), register the student in the family
    of `config.project.family` with stage `distill` (with `register`; needs `track`).
    Returns {"path", "metrics" (with "reference" and "comparison"), "version" (or None)}; under a
    launcher every rank distills and rank 0 alone evaluates and registers."""
    from worldforge.evaluation import evaluate_package
    from worldforge.platform.packages import load_package
    from worldforge.training.launch import setup_distributed

    path = distill_package(teacher, config, distill_cfg, dataset_path, out, track=track, resume=resume)
    info, _ = setup_distributed(config.train.device)
    if not info.is_main:  # the other ranks of a launcher only train
        return {"path": str(path), "metrics": {}, "version": None}
    lineage = load_package(path).lineage
    metrics = evaluate_package(
        path,
        dataset_path,
        config.eval,
        reference=teacher,
        reference_steps=lineage["teacher_steps"],
        track=track,
        experiment=config.project.experiment,
    )
    version = None
    if register and track:
        from worldforge.platform.registry import register_package

        tags = {
            "distill.method": distill_cfg.method,
            "distill.steps": str(distill_cfg.steps),
            "distill.teacher_steps": str(lineage["teacher_steps"]),
            "parent.md5": lineage["parent_md5"],
            "parent.version": lineage.get("parent_version") or "",
        }
        registered = register_package(
            path, config.project.family, STAGE, tags, experiment=config.project.experiment
        )
        version = str(registered.version)
    return {"path": str(path), "metrics": metrics, "version": version}
