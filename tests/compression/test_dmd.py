"""Distribution-matching distillation: the loss on toys with known scores, the objectives on a tiny
world model, and the stage on the shared trainer (critic engine, resume, CLI flow, registry)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from worldforge.compression.distill.config import DistillConfig, DMDConfig
from worldforge.compression.distill.dmd import DMDObjective, FakeScoreObjective, dmd_loss
from worldforge.compression.distill.stage import DISTILLATION_FILE, distill_package, with_steps
from worldforge.models.streaming import rollout
from worldforge.models.world_model import package_config
from worldforge.packages import load_package, save_package

FAST = [
    "train.deepspeed=zero0",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.validation.episodes=1",
    "train.validation.gif=false",
    "eval.episodes=1",
    "eval.videos=0",
]


def config(*overrides: str):
    from worldforge.config import load_config

    return load_config("tiny", FAST + list(overrides))


def gaussian_denoiser(mean: torch.Tensor, std: torch.Tensor):
    """E[x0 | x_t] for x0 ~ N(mean, std^2) per dimension under x_t = (1 - t) x0 + t eps: the
    exact x0 guess of a perfectly trained score network for that distribution."""

    def x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.view(-1, *([1] * (x_t.dim() - 1)))
        variance = (1 - t) ** 2 * std**2 + t**2
        return mean + (1 - t) * std**2 / variance * (x_t - (1 - t) * mean)

    return x0


def test_the_loss_and_its_gradient_are_zero_when_the_fake_score_is_the_real_one():
    torch.manual_seed(0)
    x0 = torch.randn(8, 1, 3, 4, 4, requires_grad=True)
    teacher = gaussian_denoiser(torch.tensor(0.3), torch.tensor(0.7))
    loss, grad = dmd_loss(x0, teacher, teacher, torch.rand(8), torch.randn(8, 1, 3, 4, 4))
    loss.backward()
    assert float(loss) == 0.0 and torch.count_nonzero(grad) == 0 and torch.count_nonzero(x0.grad) == 0


def test_on_a_2d_toy_the_gradient_moves_the_student_to_the_teachers_distribution():
    """The student generates x0 = mean + scale * z; the fake score is exact for the student's
    current distribution (as a fake network trained to convergence would be). Descending the DMD
    loss moves both the mean and the spread to the teacher's: distributions, not just means."""
    torch.manual_seed(0)
    real_mean, real_std = torch.tensor([1.5, -1.0]), torch.tensor([0.5, 2.0])
    mean = torch.zeros(2, requires_grad=True)
    log_std = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([mean, log_std], lr=0.05)
    real = gaussian_denoiser(real_mean, real_std)
    first = None
    for _ in range(600):
        z = torch.randn(512, 2)
        x0 = mean + log_std.exp() * z
        fake = gaussian_denoiser(mean.detach(), log_std.exp().detach())
        t = 0.02 + 0.96 * torch.rand(512)
        loss, grad = dmd_loss(x0, real, fake, t, torch.randn(512, 2))
        if first is None:  # the first step points from the student toward the teacher
            first = -grad.mean(0)
            assert torch.all(torch.sign(first) == torch.sign(real_mean - mean.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(mean.detach(), real_mean, atol=0.1, rtol=0)
    torch.testing.assert_close(log_std.exp().detach(), real_std, atol=0.15, rtol=0.1)


def test_a_matched_student_has_zero_dmd_loss_on_the_world_model(make_world_model, tiny_dataset):
    """Student, teacher and fake score all the same network: the student's samples come from the
    teacher's own sampler, the fake score is the real one, so the DMD term is exactly zero; the
    fake score's flow-matching loss is not (it has something to learn on those samples)."""
    teacher = make_world_model(steps=2)
    student, fake = with_steps(teacher, 2), copy.deepcopy(teacher)
    batch = {
        "frames": torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1,
        "actions": torch.randint(0, 6, (2, 4), generator=torch.Generator().manual_seed(1)),
    }
    torch.manual_seed(0)
    loss, logs = DMDObjective(student, teacher, fake, DMDConfig(), teacher_steps=2)(batch)
    assert float(loss) == 0.0 and float(logs["dmd_grad"]) == 0.0
    torch.manual_seed(0)
    fake_loss, _ = FakeScoreObjective(fake, student, DMDConfig())(batch)
    assert float(fake_loss) > 0


def test_the_regression_term_is_optional_and_zero_for_a_student_that_is_the_teacher(make_world_model):
    teacher = make_world_model(steps=2)
    student, fake = with_steps(teacher, 2), copy.deepcopy(teacher)
    batch = {"frames": torch.rand(2, 4, 3, 32, 32) * 2 - 1, "actions": torch.zeros(2, 4, dtype=torch.long)}
    torch.manual_seed(0)
    _, logs = DMDObjective(student, teacher, fake, DMDConfig(regression_weight=1.0), teacher_steps=2)(batch)
    assert float(logs["regression_loss"]) < 1e-10  # same network, same noise, same 2 Euler steps
    torch.manual_seed(0)
    _, logs = DMDObjective(student, teacher, fake, DMDConfig(regression_weight=1.0), teacher_steps=4)(batch)
    assert float(logs["regression_loss"]) > 0  # 2 student steps against the teacher's 4


@pytest.fixture
def teacher_package(tmp_path, make_world_model):
    model = make_world_model(steps=4)
    return save_package(
        tmp_path / "teacher", package_config(model), model, lineage={"stage": "pretrain_world"}
    )


def test_dmd_trains_the_student_and_the_fake_score_in_turn_and_records_both(
    project, tiny_dataset, teacher_package
):
    distill_cfg = DistillConfig(method="dmd", steps=2, train_steps=3, lr=1e-3, dmd=DMDConfig(fake_updates=2))
    out = distill_package(teacher_package, config(), distill_cfg, tiny_dataset, project.packages / "dmd")
    package = load_package(out)
    record = json.loads((out / DISTILLATION_FILE).read_text())
    assert package.config["sampler"]["steps"] == 2 and package.config["sampler"]["solver"] == "euler"
    assert package.lineage.params["method"] == "dmd" and record["rounds"][0]["steps"] == 3
    teacher = load_package(teacher_package)
    assert any(not torch.equal(package.state[k], teacher.state[k]) for k in package.state)  # trained
    student = package.build()
    frames = torch.rand(1, 4, 3, 32, 32) * 2 - 1
    result = rollout(student, frames[:, :2], torch.zeros(1, 4, dtype=torch.long), horizon=2)
    assert result.frames.shape == (1, 2, 3, 32, 32) and torch.isfinite(result.frames).all()


def test_resume_mid_dmd_reproduces_the_uninterrupted_run(
    project, tiny_dataset, teacher_package, tmp_path, monkeypatch
):
    """Interrupted at step 2 of 3 (SIGTERM), resumed: the student equals the uninterrupted run's,
    which needs the fake score's weights and optimizer state back too."""
    import os
    import signal

    from worldforge.training import tasks
    from worldforge.training.trainer import TrainingInterrupted

    distill_cfg = DistillConfig(method="dmd", steps=1, train_steps=3, lr=1e-3)
    straight = distill_package(
        teacher_package,
        config(f"train.checkpoint_dir={tmp_path / 'a'}"),
        distill_cfg,
        tiny_dataset,
        tmp_path / "a-out",
    )
    real = tasks.train_batches

    class Interrupting:
        def __init__(self, batches):
            self.batches, self.drawn = batches, 0

        def __next__(self):
            self.drawn += 1
            if self.drawn == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return next(self.batches)

        def state(self):
            return self.batches.state()

        def restore(self, state):
            self.batches.restore(state)

    resumed_cfg = config(f"train.checkpoint_dir={tmp_path / 'b'}")
    monkeypatch.setattr(tasks, "train_batches", lambda *args: Interrupting(real(*args)))
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 2/3"):
        distill_package(teacher_package, resumed_cfg, distill_cfg, tiny_dataset, tmp_path / "b-out")
    assert (tmp_path / "b" / "dmd-steps1" / "step00000002" / "fake_score").is_dir()
    monkeypatch.setattr(tasks, "train_batches", real)
    distill_package(teacher_package, resumed_cfg, distill_cfg, tiny_dataset, tmp_path / "b-out", resume=True)

    expected, state = load_package(straight).state, load_package(tmp_path / "b-out").state
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_zero3_is_refused_naming_the_setting(project, tiny_dataset, teacher_package):
    from worldforge.errors import WorldforgeError

    distill_cfg = DistillConfig(method="dmd", steps=1, train_steps=1)
    with pytest.raises(WorldforgeError, match="train.deepspeed=zero2"):
        distill_package(
            teacher_package,
            config("train.deepspeed=zero3"),
            distill_cfg,
            tiny_dataset,
            project.packages / "x",
        )


def test_cli_runs_dmd_as_a_flow_and_registers_the_student(
    tracked_project, tiny_dataset, teacher_package, tmp_path, assert_registered_with_decision
):
    from typer.testing import CliRunner

    from worldforge.cli import app
    from worldforge.packages import package_md5

    out = tmp_path / "student"
    command = [
        "compress",
        "distill",
        "tiny",
        "--teacher",
        str(teacher_package),
        "--dataset",
        str(tiny_dataset),
    ]
    for override in FAST + ["distill.train_steps=2"]:
        command += ["-o", override]
    result = CliRunner().invoke(app, [*command, "--method", "dmd", "--steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"distilled package: {out}" in result.output
    assert_registered_with_decision(result.output, "tiny", "distill", package_md5(out))
    assert load_package(out).config["sampler"]["steps"] == 1 and not math.isnan(
        json.loads((out / DISTILLATION_FILE).read_text())["rounds"][0]["loss_last"]
    )


def test_rollout_cases_put_the_students_own_frames_in_the_context(make_world_model):
    """rollout_frames u: the last u context frames are the model's KV-cached rollout from the real
    frames before them (what `rollout` makes from the same context, actions and noise); u = 0 is
    the real, teacher-forced context."""
    from worldforge.compression.distill.steps import rollout_case

    model = make_world_model(steps=2)
    frames = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = {
        "frames": frames,
        "actions": torch.randint(0, 6, (2, 4), generator=torch.Generator().manual_seed(1)),
    }
    real = model.tokenizer.encode(frames)
    torch.manual_seed(3)
    forced = rollout_case(model, batch, 0.0)
    j = forced.context.shape[1]
    assert torch.equal(forced.context, real[:, :j]) and torch.equal(forced.frame, real[:, j : j + 1])

    torch.manual_seed(3)
    case = rollout_case(model, batch, 0.0, rollout_frames=2)  # 4 frames, u = 2: j is 3
    assert case.context.shape[1] == 3
    assert torch.equal(case.context[:, :1], real[:, :1]) and torch.equal(case.frame, real[:, 3:4])
    torch.manual_seed(3)
    int(torch.randint(3, 4, ()))  # replay rollout_case's draw of j: the rollout's noise comes next
    expected = rollout(model, frames[:, :1], batch["actions"], horizon=2).latents
    torch.testing.assert_close(case.context[:, 1:], expected)
    assert not torch.allclose(case.context[:, 1:], real[:, 1:3])


def test_dmd_with_rollout_frames_trains_a_student(project, tiny_dataset, teacher_package):
    distill_cfg = DistillConfig(
        method="dmd", steps=1, train_steps=2, lr=1e-3, dmd=DMDConfig(rollout_frames=2)
    )
    out = distill_package(
        teacher_package, config(), distill_cfg, tiny_dataset, project.packages / "dmd-rollout"
    )
    record = json.loads((out / DISTILLATION_FILE).read_text())
    assert record["config"]["dmd"]["rollout_frames"] == 2 and math.isfinite(record["rounds"][0]["loss_last"])


def test_rollout_frames_beyond_the_clip_name_the_fields(make_world_model):
    from worldforge.compression.distill.steps import rollout_case

    batch = {"frames": torch.zeros(1, 4, 3, 32, 32), "actions": torch.zeros(1, 4, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"distill.dmd.rollout_frames.*data.clip_frames"):
        rollout_case(make_world_model(), batch, 0.0, rollout_frames=3)
