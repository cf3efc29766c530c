"""Distillation: progressive, consistency, DMD and smaller students from a tiny teacher (DMD's
loss also on toys with known scores).

The teacher is the `tiny` preset's DiT (2 blocks of width 32, residual x0 objective, patch-8
tokenizer on 32x32 frames) with noise weights: a fresh DiT has shut AdaLN gates and a zero output
layer, whose velocity field every student would match from the start."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import signal
from dataclasses import replace

import pytest
import torch

from worldforge.compression.distill.config import (
    DistillConfig,
    DistillConfigError,
    DMDConfig,
    StudentConfig,
    check_schedule,
)
from worldforge.compression.distill.dmd import DMDObjective, FakeScoreObjective, dmd_loss, generate
from worldforge.compression.distill.stage import (
    DISTILLATION_FILE,
    distill_and_register,
    distill_package,
    step_student,
    with_steps,
)
from worldforge.compression.distill.steps import (
    ConsistencyObjective,
    ProgressiveObjective,
    frame_velocity,
    rollout_case,
)
from worldforge.models.config import SamplerConfig
from worldforge.models.sampler import sample, timesteps
from worldforge.models.streaming import rollout
from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import load_package, package_md5, save_package

FAST = [
    "train.deepspeed=zero0",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.validation.episodes=1",
    "train.validation.gif=false",
    "eval.episodes=1",
    "eval.videos=0",
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(*overrides: str):
    from worldforge.config import load_config

    return load_config("tiny", FAST + list(overrides))


def tiny_teacher(seed: int = 0, steps: int = 4, *overrides: str) -> WorldModel:
    from worldforge.training.pretrain import build_model

    # The plain step grid: the step-count arithmetic of these tests (segments of 4 steps) is written
    # for it, and at the quickstart's shift 0.5 consistency's loss falls 4% in 160 steps instead of 15%.
    model = build_model(config(f"sampler.steps={steps}", "sampler.shift=1.0", *overrides))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def clips(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.rand(batch, 4, 3, 32, 32, generator=generator) * 2 - 1,  # (B, T, C, H, W)
        "actions": torch.randint(0, 6, (batch, 4), generator=generator),  # (B, T)
    }


@pytest.fixture
def dataset(tiny_dataset):
    """The tiny preset's simulator dataset (the root conftest's, built once per session)."""
    return tiny_dataset


@pytest.fixture
def teacher_package(tmp_path):
    model = tiny_teacher()
    return save_package(
        tmp_path / "teacher", package_config(model), model, lineage={"stage": "pretrain_world"}
    )


def mean_loss(objective, batches, seed: int = 123) -> float:
    torch.manual_seed(seed)
    with torch.no_grad():
        return sum(float(objective(batch)[0]) for batch in batches) / len(batches)


def fit(objective, batches, steps: int = 80, lr: float = 1e-3) -> None:
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    objective.train()
    for step in range(steps):
        torch.manual_seed(step)
        loss, _ = objective(batches[step % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    objective.eval()


def progressive(teacher):
    return ProgressiveObjective(with_steps(teacher, 2), teacher, steps=2)


def consistency(teacher):
    return ConsistencyObjective(with_steps(teacher, 2), teacher, steps=2, teacher_steps=4)


def smaller(teacher):
    from worldforge.compression.distill.student import StudentObjective, build_student

    shape = StudentConfig(depth=1, width=16, task_weight=0.5)
    return StudentObjective(build_student(teacher, shape, seed=0), teacher, shape)


@pytest.mark.parametrize(
    "make, steps",
    [
        (progressive, 80),
        (consistency, 160),
        (smaller, 80),
    ],  # consistency starts closest: the student is the teacher
    ids=["progressive", "consistency", "student"],
)
def test_each_method_lowers_its_loss_on_fixed_batches(make, steps):
    teacher = tiny_teacher()
    objective = make(teacher)
    batches = [clips(seed=seed) for seed in range(3)]
    frozen = {name: p.clone() for name, p in teacher.named_parameters()}

    before = mean_loss(objective, batches)
    fit(objective, batches, steps=steps)
    after = mean_loss(objective, batches)

    assert after < 0.85 * before, (before, after)
    assert all(torch.equal(p, frozen[name]) for name, p in teacher.named_parameters())  # teacher frozen


def test_progressive_loss_is_zero_when_the_teacher_steps_are_straight():
    """A velocity field that does not depend on x or t (the conv head's last convolution is only a
    bias, and x0 prediction is off) makes two Euler steps land exactly where one does: nothing to
    learn."""
    from worldforge.models.config import ObjectiveConfig

    teacher = tiny_teacher(0, 4, "model.warp=false")  # velocity prediction: no motion field to warp with
    teacher.objective_cfg = ObjectiveConfig(prediction="velocity")
    with torch.no_grad():
        teacher.dit.final.head.conv_out.weight.zero_()
        teacher.dit.final.head.conv_out.bias.normal_()
    loss, _ = progressive(teacher)(clips())
    assert float(loss) < 1e-10


def test_schedule_errors_name_the_field_and_what_is_reachable():
    assert check_schedule(DistillConfig(method="progressive", steps=2), 16) == [8, 4, 2]
    assert check_schedule(DistillConfig(method="consistency", steps=2), 8) == [2]
    with pytest.raises(
        DistillConfigError, match=r"distill.steps \(--steps\) 3 .* 16 steps.*reachable: 8, 4, 2, 1"
    ):
        check_schedule(DistillConfig(method="progressive", steps=3), 16)
    with pytest.raises(DistillConfigError, match="odd number of steps"):
        check_schedule(DistillConfig(method="progressive", steps=1), 1)
    with pytest.raises(DistillConfigError, match="divisor"):
        check_schedule(DistillConfig(method="consistency", steps=3), 8)
    from worldforge.compression.distill.student import student_config

    with pytest.raises(DistillConfigError, match="distill.student.*not smaller"):
        student_config(tiny_teacher(), StudentConfig(depth=2))
    with pytest.raises(ValueError, match="every loss weight is 0"):
        StudentConfig(feature_weight=0, output_weight=0)


def test_a_teacher_that_is_not_a_trained_world_model_is_refused(dataset, tmp_path, project):
    model = tiny_teacher()
    tokenizer_only = save_package(
        tmp_path / "tok", package_config(model), model, lineage={"stage": "pretrain_tokenizer"}
    )
    with pytest.raises(DistillConfigError, match="lineage.json stage is 'pretrain_tokenizer'"):
        distill_package(tokenizer_only, config(), DistillConfig(steps=2), dataset, tmp_path / "out")
    with pytest.raises(DistillConfigError, match=r"distill.steps \(--steps\) 3"):
        distill_package(
            save_package(tmp_path / "t", package_config(model), model),
            config(),
            DistillConfig(steps=3),
            dataset,
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "distill_cfg, rounds",
    [
        (DistillConfig(method="progressive", steps=1, train_steps=2, lr=1e-3), 2),
        (DistillConfig(method="consistency", steps=2, train_steps=2, lr=1e-3), 1),
        (
            DistillConfig(method="student", steps=2, train_steps=2, student=StudentConfig(depth=1, width=16)),
            1,
        ),
    ],
    ids=["progressive", "consistency", "student"],
)
def test_student_package_records_its_steps_and_lineage_and_rolls_out(
    project, dataset, teacher_package, distill_cfg, rounds
):
    out = distill_package(teacher_package, config(), distill_cfg, dataset, project.packages / "student")

    package = load_package(out)
    record = json.loads((out / DISTILLATION_FILE).read_text())
    assert package.config["sampler"]["steps"] == distill_cfg.steps
    assert package.lineage.stage == "distill" and package.lineage.params["method"] == distill_cfg.method
    assert package.lineage.parent == str(teacher_package.resolve())
    assert package.lineage.parent_md5 == package_md5(teacher_package)
    assert package.lineage.params["teacher_steps"] == 4 and package.lineage.parent_version is None
    assert len(record["rounds"]) == rounds and all(r["steps"] == 2 for r in record["rounds"])
    assert record["after"]["denoise_steps"] == distill_cfg.steps
    assert "val/psnr_mean" in record["rounds"][-1]["validation"]
    if distill_cfg.method == "progressive":
        assert [r["student_steps"] for r in record["rounds"]] == [2, 1]
    if distill_cfg.method == "student":
        assert package.config["model"]["depth"] == 1 and package.config["model"]["width"] == 16
        assert record["after"]["parameters_dit"] < record["before"]["parameters_dit"]

    student = package.build()
    batch = clips(2, seed=5)
    context, actions = batch["frames"][:, :2], batch["actions"]
    recorded = rollout(student, context, actions, horizon=2, generator=torch.Generator().manual_seed(0))
    explicit = rollout(
        student,
        context,
        actions,
        horizon=2,
        steps=distill_cfg.steps,
        generator=torch.Generator().manual_seed(0),
    )
    assert recorded.frames.shape == (2, 2, 3, 32, 32)
    assert torch.equal(recorded.frames, explicit.frames)
    if distill_cfg.method != "student":  # trained away from the teacher it started as
        teacher = load_package(teacher_package).build()
        assert not torch.equal(student.dit.blocks[0].mlp.fc1.weight, teacher.dit.blocks[0].mlp.fc1.weight)


class SignalAt:
    """Training batches that send this process SIGTERM as draw `draw_at` (counted over every
    stream this object wraps, i.e. over rounds) is taken, as a cluster scheduler would."""

    def __init__(self, draw_at: int):
        self.draw_at, self.drawn = draw_at, 0

    def wrap(self, batches):
        outer = self

        class Wrapped:
            def __next__(self):
                outer.drawn += 1
                if outer.drawn == outer.draw_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                return next(batches)

            def state(self):
                return batches.state()

            def restore(self, state):
                batches.restore(state)

        return Wrapped()


@pytest.mark.parametrize(
    "distill_cfg, draw_at, critic",
    [
        # round 0 draws 3 batches; stop in round 1 at step 2
        (DistillConfig(method="progressive", steps=1, train_steps=3, lr=1e-3), 3 + 2, None),
        # the student equals the uninterrupted run's only if the fake score and its optimizer come back too
        (
            DistillConfig(method="dmd", steps=1, train_steps=3, lr=1e-3),
            2,
            "dmd-steps1/step00000002/fake_score",
        ),
    ],
    ids=["progressive", "dmd"],
)
def test_resume_mid_distillation_reproduces_the_uninterrupted_run(
    project, dataset, teacher_package, tmp_path, monkeypatch, distill_cfg, draw_at, critic
):
    from worldforge.training import tasks
    from worldforge.training.trainer import TrainingInterrupted

    straight = distill_package(
        teacher_package,
        config(f"train.checkpoint_dir={tmp_path / 'a'}"),
        distill_cfg,
        dataset,
        tmp_path / "a-out",
    )

    resumed_cfg = config(f"train.checkpoint_dir={tmp_path / 'b'}")
    real = tasks.train_batches
    interrupt = SignalAt(draw_at=draw_at)
    monkeypatch.setattr(tasks, "train_batches", lambda *args: interrupt.wrap(real(*args)))
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 2/3"):
        distill_package(teacher_package, resumed_cfg, distill_cfg, dataset, tmp_path / "b-out")
    assert not (tmp_path / "b-out").exists()
    assert critic is None or (tmp_path / "b" / critic).is_dir()  # the critic's engine was checkpointed
    monkeypatch.setattr(tasks, "train_batches", real)
    distill_package(teacher_package, resumed_cfg, distill_cfg, dataset, tmp_path / "b-out", resume=True)

    expected, state = load_package(straight).state, load_package(tmp_path / "b-out").state
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    rounds = json.loads((tmp_path / "b-out" / DISTILLATION_FILE).read_text())["rounds"]
    assert [r["steps"] for r in rounds] == [3, 3][: len(rounds)] and len(rounds) == (
        2 if critic is None else 1
    )


def test_registered_student_names_its_teacher_version_and_is_evaluated_against_it(
    tracked_project, dataset, teacher_package
):
    import mlflow

    from worldforge.core.tracking import configure
    from worldforge.registry import register_package

    configure(tracked_project)
    cfg = config("project.family=distill-test", "project.experiment=distill-test")
    register_package(teacher_package, "distill-test", "pretrain", experiment="distill-test")
    distill_cfg = DistillConfig(method="consistency", steps=2, train_steps=2, lr=1e-3)

    result = distill_and_register(
        "models:/distill-test/1", cfg, distill_cfg, dataset, tracked_project.packages / "student"
    )

    package = load_package(result["path"])
    assert package.lineage.parent == "models:/distill-test/1"
    assert package.lineage.parent_version == "models:/distill-test/1"
    assert package.lineage.parent_md5 == package_md5(teacher_package)
    metrics = result["metrics"]
    assert (
        metrics["denoise_steps"] == 2 and metrics["reference"]["denoise_steps"] == 4
    )  # teacher at its steps
    assert "psnr_mean" in metrics["comparison"]
    version = mlflow.MlflowClient().get_model_version("distill-test", result["version"])
    assert result["version"] == "2"
    assert version.tags["stage"] == "distill"
    assert version.tags["parent.model"] == "models:/distill-test/1"
    assert version.tags["parent.md5"] == package_md5(teacher_package)
    assert version.tags["distill.method"] == "consistency" and version.tags["distill.steps"] == "2"
    assert version.tags["package.md5"] == package_md5(result["path"])
    run = mlflow.get_run(package.lineage.mlflow_run_id)
    assert run.data.tags["stage"] == "distill" and run.data.tags["parent.version"] == "models:/distill-test/1"
    from worldforge.core.lineage import DataRepo

    assert run.data.tags["package.dvc_md5"] == DataRepo(tracked_project).md5(result["path"])  # versioned
    assert (
        run.data.params["distill.method"] == "consistency" and run.data.params["distill.teacher_steps"] == "4"
    )
    assert "train/loss" in run.data.metrics and "after.denoise_steps" in run.data.metrics


def test_cli_distills_through_a_prefect_flow_and_refuses_unreachable_steps(
    tracked_project, dataset, teacher_package, tmp_path
):
    from typer.testing import CliRunner

    from worldforge.cli import app

    common = ["compress", "distill", "tiny", "--teacher", str(teacher_package), "--dataset", str(dataset)]
    for override in FAST + ["distill.train_steps=1"]:
        common += ["-o", override]
    bad = CliRunner().invoke(app, [*common, "--steps", "3", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2, bad.output
    assert "distill.steps (--steps) 3" in bad.output and "reachable: 2, 1" in bad.output
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "student"
    result = CliRunner().invoke(app, [*common, "--method", "progressive", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"distilled package: {out}" in result.output and "registered: version 1" in result.output
    assert load_package(out).config["sampler"]["steps"] == 2


# ---- distribution-matching distillation ----------------------------------------------------------


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


def test_a_matched_student_has_zero_dmd_loss_on_the_world_model(make_world_model):
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


@pytest.mark.parametrize("solver", ["euler", "ancestral"])
def test_the_dmd_student_generates_its_frame_as_its_own_sampler_does(make_world_model, solver):
    """DMD trains the student through the steps its rollouts take: Euler's, or the ancestral
    sampler's fresh noise at each step (the same draws, so the same frame)."""
    model = make_world_model(sampler=SamplerConfig(steps=3, shift=0.5, solver=solver))
    batch = {"frames": torch.rand(2, 4, 3, 32, 32) * 2 - 1, "actions": torch.zeros(2, 4, dtype=torch.long)}
    case = rollout_case(model, batch, 0.0)
    noise = torch.randn_like(case.frame)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return frame_velocity(model, case, x, x.new_full((x.shape[0],), t))

    torch.manual_seed(1)
    generated = generate(model, case, noise, 3)
    torch.manual_seed(1)
    expected = sample(velocity, noise, 3, 0.5, solver)
    torch.testing.assert_close(generated, expected, rtol=1e-4, atol=1e-5)
    torch.manual_seed(2)
    other = generate(model, case, noise, 3)
    assert torch.equal(other, generated) == (solver == "euler")  # fresh noise only when ancestral


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


def test_an_ancestral_teachers_regression_target_is_a_function_of_the_noise(make_world_model, random_weights):
    """DMD's regression pairs a noise with one teacher sample: an ancestral teacher's chain re-noises
    with the starting noise at every step, so the same noise gives the same target whatever the
    random state (with fresh noise the regression would learn the mean of the samples)."""
    teacher = random_weights(make_world_model(steps=4, sampler=SamplerConfig(steps=4, solver="ancestral")))
    student, fake = with_steps(teacher, 1), copy.deepcopy(teacher)
    objective = DMDObjective(student, teacher, fake, DMDConfig(regression_weight=1.0), teacher_steps=4)
    batch = {"frames": torch.rand(2, 4, 3, 32, 32) * 2 - 1, "actions": torch.zeros(2, 4, dtype=torch.long)}
    case = rollout_case(teacher, batch, 0.0)
    noise = torch.randn_like(case.frame)
    with torch.no_grad():
        torch.manual_seed(1)
        first = objective._teacher_sample(case, noise)
        torch.manual_seed(2)
        again = objective._teacher_sample(case, noise)
        other = objective._teacher_sample(case, torch.randn_like(noise))

        def velocity(x, t):
            return frame_velocity(teacher, case, x, x.new_full((x.shape[0],), t), guided=True)

        x = noise  # the chain by hand: predict x0, re-noise it with the starting noise
        for t, t_next in itertools.pairwise(timesteps(4, teacher.sampler_cfg.shift)):
            x0 = x - t * velocity(x, t)
            x = (1 - t_next) * x0 + t_next * noise
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(first, x, rtol=1e-5, atol=1e-6)
    assert (first - other).abs().mean() > 1e-3


def test_a_guided_teacher_is_distilled_with_its_guidance_into_a_student_that_samples_without(make_world_model):
    """`sampler.action_guidance`: the teacher's calls in distillation are guided as its rollouts
    are, and the step student samples what it learned with none of its own (it would double it)."""
    teacher = make_world_model(steps=2, sampler=SamplerConfig(steps=2, action_guidance=3.0))
    batch = {
        "frames": torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1,
        "actions": torch.randint(1, 6, (2, 4), generator=torch.Generator().manual_seed(1)),
    }
    case = rollout_case(teacher, batch, 0.0)
    x, t = torch.randn_like(case.frame), torch.full((2,), 0.7)
    v = frame_velocity(teacher, case, x, t)
    blind = replace(case, condition=torch.cat([case.condition[:, :-1], teacher.no_action(case.condition[:, -1:])], 1))
    v_none = frame_velocity(teacher, blind, x, t)
    assert not torch.allclose(v, v_none)
    torch.testing.assert_close(frame_velocity(teacher, case, x, t, guided=True), v_none + 3.0 * (v - v_none))

    student = step_student(teacher, 2)
    assert student.sampler_cfg.action_guidance == 1.0 and teacher.sampler_cfg.action_guidance == 3.0
    # The student starts as the unguided teacher: the guided teacher's sample is what it must learn.
    torch.manual_seed(0)
    _, logs = DMDObjective(student, teacher, copy.deepcopy(teacher), DMDConfig(regression_weight=1.0), 2)(batch)
    assert float(logs["regression_loss"]) > 1e-6
    unguided = step_student(teacher, 2)  # the same network with guidance 1, as a teacher
    torch.manual_seed(0)
    _, logs = DMDObjective(student, unguided, copy.deepcopy(teacher), DMDConfig(regression_weight=1.0), 2)(batch)
    assert float(logs["regression_loss"]) < 1e-10


def test_dmd2s_adversarial_term_trains_its_critic_and_pulls_the_student(make_world_model):
    """With `adversarial_weight` the student's loss adds the critic's hinge loss and the weighted
    term: the critic learns from the first, the student from the second, even where the DMD term
    is zero (a matched student)."""
    teacher = make_world_model(steps=2)
    student, fake = with_steps(teacher, 2), copy.deepcopy(teacher)
    batch = {"frames": torch.rand(2, 4, 3, 32, 32) * 2 - 1, "actions": torch.zeros(2, 4, dtype=torch.long)}
    objective = DMDObjective(student, teacher, fake, DMDConfig(adversarial_weight=0.5), teacher_steps=2)
    torch.manual_seed(0)
    loss, logs = objective(batch)
    assert float(logs["dmd_loss"]) == 0.0
    expected = logs["critic_loss"] + 0.5 * logs["adversarial_loss"]
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert all(p.grad is not None for p in objective.critic.parameters() if p.dim() > 1)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.dit.parameters())
    assert all(p.grad is None for p in teacher.parameters()) and all(
        p.grad is None for p in fake.parameters()
    )
    assert DMDObjective(student, teacher, fake, DMDConfig(), teacher_steps=2).critic is None


def test_dmd_trains_the_student_and_the_fake_score_in_turn_and_records_both(
    project, dataset, teacher_package
):
    dmd = DMDConfig(fake_updates=2, lr=3e-4)  # the student's own learning rate, not distill.lr
    distill_cfg = DistillConfig(method="dmd", steps=2, train_steps=3, lr=1e-3, dmd=dmd)
    out = distill_package(teacher_package, config(), distill_cfg, dataset, project.packages / "dmd")
    package = load_package(out)
    record = json.loads((out / DISTILLATION_FILE).read_text())
    teacher = load_package(teacher_package)
    solver = "ancestral" if teacher.config["sampler"]["solver"] == "ancestral" else "euler"
    assert package.config["sampler"]["steps"] == 2 and package.config["sampler"]["solver"] == solver
    assert package.lineage.params["method"] == "dmd" and record["rounds"][0]["steps"] == 3
    assert record["rounds"][0]["lr"] == 3e-4
    assert any(not torch.equal(package.state[k], teacher.state[k]) for k in package.state)  # trained
    student = package.build()
    frames = torch.rand(1, 4, 3, 32, 32) * 2 - 1
    result = rollout(student, frames[:, :2], torch.zeros(1, 4, dtype=torch.long), horizon=2)
    assert result.frames.shape == (1, 2, 3, 32, 32) and torch.isfinite(result.frames).all()


def test_dmd_under_zero3_trains_the_same_student_as_without_partitioning(
    project, dataset, teacher_package, tmp_path, zero3_partition_all
):
    """Under ZeRO-3 each engine partitions its network; the student calls the fake score and the
    fake score's update samples the student outside their own engines, with their parameters
    gathered: the student comes out as without ZeRO (one process, so the same micro-batches)."""
    distill_cfg = DistillConfig(method="dmd", steps=1, train_steps=2, lr=1e-3)
    plain = distill_package(teacher_package, config(), distill_cfg, dataset, tmp_path / "zero0")
    partitioned = distill_package(
        teacher_package,
        config(f"train.deepspeed={zero3_partition_all(tmp_path)}"),
        distill_cfg,
        dataset,
        tmp_path / "zero3",
    )
    expected, state = load_package(plain).state, load_package(partitioned).state
    assert any(not torch.equal(expected[k], load_package(teacher_package).state[k]) for k in expected)
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_cli_runs_dmd_as_a_flow_and_registers_the_student(
    tracked_project, dataset, teacher_package, tmp_path, assert_registered_with_decision
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
        str(dataset),
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


def test_dmd2s_critic_trains_with_the_student_and_stays_out_of_its_package(project, dataset, teacher_package):
    dmd = DMDConfig(adversarial_weight=0.1)
    distill_cfg = DistillConfig(method="dmd", steps=1, train_steps=2, lr=1e-3, dmd=dmd)
    out = distill_package(teacher_package, config(), distill_cfg, dataset, project.packages / "dmd2")
    package, teacher = load_package(out), load_package(teacher_package)
    assert set(package.state) == set(teacher.state)  # the student's weights, no critic among them
    record = json.loads((out / DISTILLATION_FILE).read_text())
    assert record["config"]["dmd"]["adversarial_weight"] == 0.1
    assert math.isfinite(record["rounds"][0]["loss_last"])


def test_dmd_with_rollout_frames_trains_a_student(project, dataset, teacher_package):
    distill_cfg = DistillConfig(
        method="dmd", steps=1, train_steps=2, lr=1e-3, dmd=DMDConfig(rollout_frames=2)
    )
    out = distill_package(teacher_package, config(), distill_cfg, dataset, project.packages / "dmd-rollout")
    record = json.loads((out / DISTILLATION_FILE).read_text())
    assert record["config"]["dmd"]["rollout_frames"] == 2 and math.isfinite(record["rounds"][0]["loss_last"])


def test_rollout_frames_beyond_the_clip_name_the_fields(make_world_model):
    from worldforge.compression.distill.steps import rollout_case

    batch = {"frames": torch.zeros(1, 4, 3, 32, 32), "actions": torch.zeros(1, 4, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"distill.dmd.rollout_frames.*data.clip_frames"):
        rollout_case(make_world_model(), batch, 0.0, rollout_frames=3)


def test_dmd2s_critic_learns_at_its_own_rate_in_a_group_of_its_own(make_world_model):
    """`adversarial_lr_scale`: the optimizer groups split the student's trainable weights from the
    critic's, every trainable weight in one of them, the critic's at the scaled rate."""
    teacher = make_world_model(steps=2)
    student, fake = with_steps(teacher, 2), copy.deepcopy(teacher)
    config = DMDConfig(adversarial_weight=0.1, adversarial_lr_scale=5.0)
    objective = DMDObjective(student, teacher, fake, config, teacher_steps=2)
    main, critic = objective.param_groups(2e-4)
    assert critic["lr"] == 2e-4 * 5.0 and "lr" not in main
    assert {id(p) for p in critic["params"]} == {id(p) for p in objective.critic.parameters()}
    grouped = [id(p) for p in main["params"] + critic["params"]]
    assert sorted(grouped) == sorted(id(p) for p in objective.parameters() if p.requires_grad)
    plain = DMDObjective(student, teacher, fake, DMDConfig(), teacher_steps=2).param_groups(2e-4)
    assert len(plain) == 1
