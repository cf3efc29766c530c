"""The `distill` section: fewer denoising steps, or a smaller network, learned from a teacher.

    method: progressive   rounds, each halving the student's steps: teacher_steps -> ... -> steps
    method: consistency   multistep consistency distillation to `steps` segments, in one run
    method: student       a smaller DiT (student.depth / student.width) trained from the teacher's
                          features and velocity; samples with `steps`
    method: dmd           distribution matching (DMD/DMD2): a `steps`-step student whose samples'
                          distribution matches the teacher's, judged by the teacher and a fake score
                          network trained online on the student's samples (`dmd`)

`steps` is what the student's package records as `sampler.steps`. `teacher_steps` is the step
count the teacher is distilled from (None: the teacher package's own `sampler.steps`); a teacher
trained for 1-step sampling can still be distilled from, e.g., 16 Euler steps of its velocity.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from worldforge.core.schema import Section
from worldforge.errors import WorldforgeError

METHODS = ("progressive", "consistency", "student", "dmd")


class DistillConfigError(WorldforgeError, ValueError):
    """A `distill` setting (or --steps / --method) that cannot be used; names it and what was expected."""


class StudentConfig(Section):
    """The smaller student of `method: student`: the teacher's DiT with fewer blocks and/or a
    narrower width. Layer pairs: student block i is matched to teacher block
    round((i + 1) * teacher_depth / depth) - 1 (the last student block to the last teacher block)."""

    depth: int | None = Field(None, ge=1, description="student blocks; None: the teacher's")
    width: int | None = Field(None, ge=8, description="student token width; None: the teacher's")
    heads: int | None = Field(None, ge=1, description="student heads per block; None: the teacher's")
    feature_weight: float = Field(
        1.0, ge=0, description="weight of the block-output losses (projected when widths differ)"
    )
    output_weight: float = Field(1.0, ge=0, description="weight of the velocity MSE against the teacher")
    task_weight: float = Field(0.0, ge=0, description="weight of the flow-matching loss on the data")

    @model_validator(mode="after")
    def _some_loss(self) -> StudentConfig:
        if self.feature_weight + self.output_weight + self.task_weight == 0:
            raise ValueError("distill.student: every loss weight is 0; give one of them a positive weight")
        return self


class DMDConfig(Section):
    """Distribution-matching distillation (`compression/distill/dmd.py`)."""

    lr: float | None = Field(
        None,
        gt=0,
        description="peak learning rate of the DMD student; None: distill.lr. A motion-field model "
        "(model.warp) diverged at the quickstart's 1e-3 and held at 2e-4",
    )
    fake_lr: float | None = Field(
        None, gt=0, description="peak learning rate of the fake score; None: distill.dmd.lr, else distill.lr"
    )
    fake_updates: int = Field(
        1, ge=1, description="fake-score optimizer steps per student step (DMD2's two time-scale rule uses 5)"
    )
    min_level: float = Field(0.02, gt=0, lt=1, description="lowest noise level a student sample is judged at")
    max_level: float = Field(
        0.98, gt=0, lt=1, description="highest noise level a student sample is judged at"
    )
    rollout_frames: int = Field(
        0,
        ge=0,
        description="self forcing: the last N context frames of each training case are the student's own "
        "rollout (no gradient), as at inference; 0: teacher-forced context (needs data.clip_frames >= N + 2)",
    )
    regression_weight: float = Field(
        0.0,
        ge=0,
        description="weight of DMD's regression term (the student's frame against the teacher's "
        "teacher_steps-step sample from the same noise); DMD2 drops it (0)",
    )
    adversarial_weight: float = Field(
        0.0,
        ge=0,
        description="weight of DMD2's adversarial term: a patch critic (models/adversarial.py), trained in the "
        "same step, tells the true next frame from the student's, each shown with the frames before it, and "
        "the student is pushed toward frames it cannot tell apart: real frames, not only the teacher's "
        "distribution. 0: the DMD loss alone",
    )
    adversarial_noise: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="the critic sees each true/generated pair noised to one level drawn from U(0, this) "
        "(DMD2's critic judges noised samples, where grain is hidden and shapes are not); 0: clean frames",
    )
    adversarial_lr_scale: float = Field(
        1.0,
        gt=0,
        description="the critic's learning rate over the student's: a critic that learns faster than the "
        "generator it judges (GAN training's two time-scale update rule); 1: the student's",
    )

    @model_validator(mode="after")
    def _levels(self) -> DMDConfig:
        if self.min_level >= self.max_level:
            raise ValueError(
                f"distill.dmd: min_level {self.min_level} must be below max_level {self.max_level}"
            )
        return self


class DistillConfig(Section):
    """How to distill. See the module docstring."""

    method: Literal["progressive", "consistency", "student", "dmd"] = Field(
        "progressive", description="progressive | consistency | student (smaller network) | dmd"
    )
    steps: int = Field(4, ge=1, description="the student's sampler steps (recorded in its package)")
    teacher_steps: int | None = Field(
        None,
        ge=1,
        description="Euler steps of the teacher's sampling that is distilled; None: its sampler.steps",
    )
    train_steps: int = Field(
        500, ge=1, description="optimizer steps of distillation (progressive: of every round)"
    )
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    student: StudentConfig = StudentConfig()
    dmd: DMDConfig = DMDConfig()


def check_schedule(config: DistillConfig, teacher_steps: int) -> list[int]:
    """The student step counts of the run, in order, e.g. [8, 4] from 16 to 4 (progressive);
    [steps] for the other methods. Raises DistillConfigError naming the field at fault."""
    steps = config.steps
    if config.method == "progressive":
        schedule, current = [], teacher_steps
        while current > steps and current % 2 == 0:
            current //= 2
            schedule.append(current)
        if current != steps or not schedule:
            reachable = [teacher_steps // 2**k for k in range(1, 8) if teacher_steps % 2**k == 0]
            raise DistillConfigError(
                f"distill.steps (--steps) {steps} cannot be reached by halving the teacher's "
                f"{teacher_steps} steps (distill.teacher_steps); reachable: "
                f"{', '.join(map(str, reachable)) or 'none (the teacher takes an odd number of steps)'}"
            )
        return schedule
    if config.method == "consistency" and (steps >= teacher_steps or teacher_steps % steps):
        raise DistillConfigError(
            f"distill.steps (--steps) {steps}: consistency distillation needs fewer steps than the "
            f"teacher's {teacher_steps} (distill.teacher_steps) and a divisor of it, so that every "
            "segment boundary is a teacher step"
        )
    return [steps]
