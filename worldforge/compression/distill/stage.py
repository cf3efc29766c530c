"""Distillation: a world-model package (the teacher) in, a cheaper student package out.

    progressive   rounds of ProgressiveObjective, each halving the steps     distill_steps.py
    consistency   one run of ConsistencyObjective to `steps` segments        distill_steps.py
    student       a smaller DiT from the teacher's features and velocity     distill_student.py
    dmd           DMDObjective (student) and FakeScoreObjective (the trainer's critic)   dmd.py

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

from worldforge.compression.distill.config import DistillConfig, DistillConfigError, check_schedule
from worldforge.compression.distill.dmd import DMDObjective, FakeScoreObjective
from worldforge.compression.distill.steps import ConsistencyObjective, ProgressiveObjective
from worldforge.compression.distill.student import StudentObjective, build_student
from worldforge.compression.stage import compress_and_finish, open_parent, publish, stage_lineage, stage_run
from worldforge.config import WorldforgeConfig
from worldforge.core import tracking
from worldforge.core.project import Project
from worldforge.models.flops import count_parameters, rollout_flops
from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import read_lineage, save_package
from worldforge.packages.lineage import Lineage
from worldforge.training.launch import barrier, setup_distributed
from worldforge.training.tasks import check_dataset, train_student
from worldforge.training.trainer import Critic

DISTILLATION_FILE = "distillation.json"
STAGE = "distill"


def with_steps(model: WorldModel, steps: int) -> WorldModel:
    """A copy of `model` whose sampler takes `steps` steps."""
    copied = copy.deepcopy(model)
    copied.sampler_cfg = model.sampler_cfg.model_copy(update={"steps": steps})
    return copied


def step_student(teacher: WorldModel, steps: int) -> WorldModel:
    """A step-distilled student of `teacher`: its copy at `steps` steps, sampling without guidance on
    the action, which it learns from the guided teacher (`frame_velocity(..., guided=True)`)."""
    student = with_steps(teacher, steps)
    student.sampler_cfg = student.sampler_cfg.model_copy(update={"action_guidance": 1.0})
    return student


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
    if package.lineage is not None and package.lineage.stage == "pretrain_tokenizer":
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
    out, dataset = Path(out), Path(dataset_path)
    info, device = setup_distributed(config.train.device)
    parent = open_parent(source, config, track=track and info.is_main)
    check_teacher(parent.package, str(source))
    teacher = parent.package.build(device)
    check_dataset(teacher, dataset)
    teacher_steps = distill_cfg.teacher_steps or teacher.sampler_cfg.steps
    schedule = check_schedule(distill_cfg, teacher_steps)
    params = {"method": distill_cfg.method, "teacher_steps": teacher_steps, "steps": distill_cfg.steps}
    lineage = stage_lineage(STAGE, parent, dataset, params)
    checkpoints = Path(config.train.checkpoint_dir or Project.current().checkpoints / out.name)
    run = _Run(config, distill_cfg, dataset, checkpoints, track and info.is_main, resume)
    tags = {"distill.method": distill_cfg.method}
    with stage_run(run.track, STAGE, config, distill_cfg, lineage, **tags):
        if distill_cfg.method == "progressive":
            student, rounds = _progressive(run, teacher, teacher_steps, schedule)
        elif distill_cfg.method == "consistency":
            student, rounds = _consistency(run, teacher, teacher_steps)
        elif distill_cfg.method == "dmd":
            student, rounds = _dmd(run, teacher, teacher_steps)
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
                publish(out, _metrics(record))
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
        critic: Critic | None = None,
        lr: float | None = None,
    ) -> tuple[WorldModel, dict[str, Any]]:
        """Train `objective` (whose submodule at `prefix` is `student`) for `train_steps` steps at
        peak learning rate `lr` (default `distill.lr`). Returns the trained student (the package
        weights: EMA when enabled) and the run's record."""
        return train_student(
            name,
            objective,
            student,
            prefix,
            self.config,
            self.dataset,
            steps=self.distill_cfg.train_steps,
            lr=lr or self.distill_cfg.lr,
            seed=self.config.project.seed + seed_offset,
            checkpoint_dir=self.checkpoints / folder,
            track=self.track,
            resume=self.resume,
            critic=critic,
        )


def _progressive(
    run: _Run, teacher: WorldModel, teacher_steps: int, schedule: list[int]
) -> tuple[WorldModel, list[dict[str, Any]]]:
    current, rounds = with_steps(teacher, teacher_steps), []
    for index, steps in enumerate(schedule):
        student = step_student(current, steps)  # initialised from the previous round's student
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
    steps = run.distill_cfg.steps
    student = step_student(teacher, steps)
    objective = ConsistencyObjective(student, teacher, steps, teacher_steps)
    trained, record = run.train(
        "distill_consistency", objective, student, "model.", f"consistency-steps{steps}"
    )
    return trained, [{"round": 0, "teacher_steps": teacher_steps, "student_steps": steps, **record}]


def _dmd(run: _Run, teacher: WorldModel, teacher_steps: int) -> tuple[WorldModel, list[dict[str, Any]]]:
    """The student and the fake score both start as copies of the teacher. The student samples as
    DMD trains it (`dmd.generate`): with fresh noise at each step when the teacher's solver is
    ancestral, else by Euler steps."""
    steps, dmd = run.distill_cfg.steps, run.distill_cfg.dmd
    student = step_student(teacher, steps)
    if student.sampler_cfg.solver != "ancestral":
        student.sampler_cfg = student.sampler_cfg.model_copy(update={"solver": "euler"})
    fake = copy.deepcopy(teacher)
    objective = DMDObjective(student, teacher, fake, dmd, teacher_steps)
    critic = Critic(
        "fake_score",
        FakeScoreObjective(fake, student, dmd),
        dmd.fake_lr or dmd.lr or run.distill_cfg.lr,
        dmd.fake_updates,
    )
    trained, record = run.train(
        "distill_dmd", objective, student, "model.", f"dmd-steps{steps}", critic=critic, lr=dmd.lr
    )
    return trained, [{"round": 0, "teacher_steps": teacher_steps, "student_steps": steps, **record}]


def _smaller(run: _Run, teacher: WorldModel) -> tuple[WorldModel, list[dict[str, Any]]]:
    steps = run.distill_cfg.steps
    student = with_steps(build_student(teacher, run.distill_cfg.student, run.config.project.seed), steps)
    student.to(next(teacher.dit.parameters()).device)
    objective = StudentObjective(student, teacher, run.distill_cfg.student)
    trained, record = run.train("distill_student", objective, student, "kd.model.", f"student-steps{steps}")
    shape = trained.model_cfg
    return trained, [{"round": 0, "student_depth": shape.depth, "student_width": shape.width, **record}]


def _cost(model: WorldModel, steps: int) -> dict[str, float]:
    flops = rollout_flops(model, steps=steps)
    return {
        "parameters": count_parameters(model),
        "parameters_dit": count_parameters(model.dit),
        "denoise_steps": steps,
        "flops_per_frame": flops["total"],
        "flops_per_frame_denoise": flops["denoise"],
    }


@contextlib.contextmanager
def _round_run(track: bool, config: WorldforgeConfig, index: int, steps: int) -> Iterator[None]:
    """A nested MLflow run per progressive round, so each round's loss curve has its own steps."""
    if not track:
        yield
        return

    tags = {"distill.round": str(index), "distill.student_steps": str(steps)}
    with tracking.stage_run("distill_round", config.project.experiment, tags=tags):
        yield


def _metrics(record: dict[str, Any]) -> dict[str, float]:
    metrics = {
        f"{section}.{key}": value for section in ("before", "after") for key, value in record[section].items()
    }
    first, last = record["rounds"][0], record["rounds"][-1]
    if last["loss_last"] is not None:
        metrics.update({"distill.loss_first": first["loss_first"], "distill.loss_last": last["loss_last"]})
    return metrics


def _write(out: Path, model: WorldModel, lineage: Lineage, record: dict[str, Any]) -> Path:
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
    offer: bool = True,
) -> dict[str, Any]:
    """The `compress distill` stage end to end (`compression.stage.compress_and_finish`): distill,
    evaluate the student with the teacher as the reference (teacher at its distilled-from step
    count), and with `track` register it with stage `distill` and offer it to the gates (`offer`)."""

    def details(path: Path) -> tuple[dict[str, str], int]:
        teacher_steps = read_lineage(path).params["teacher_steps"]
        tags = {
            "distill.method": distill_cfg.method,
            "distill.steps": str(distill_cfg.steps),
            "distill.teacher_steps": str(teacher_steps),
        }
        return tags, teacher_steps

    return compress_and_finish(
        distill_package,
        STAGE,
        source=teacher,
        config=config,
        dataset_path=dataset_path,
        track=track,
        offer=offer,
        details=details,
        distill_cfg=distill_cfg,
        out=out,
        resume=resume,
    )
