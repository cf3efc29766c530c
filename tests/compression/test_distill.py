"""Distillation: progressive, consistency and smaller students from a tiny teacher.

The teacher is the `tiny` preset's DiT (2 blocks of width 32, residual x0 objective, patch-8
tokenizer on 32x32 frames) with noise weights: a fresh DiT has shut AdaLN gates and a zero output
layer, whose velocity field every student would match from the start."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from worldforge.compression.distill.config import (
    DistillConfig,
    DistillConfigError,
    StudentConfig,
    check_schedule,
)
from worldforge.compression.distill.stage import (
    DISTILLATION_FILE,
    distill_and_register,
    distill_package,
    with_steps,
)
from worldforge.compression.distill.steps import ConsistencyObjective, ProgressiveObjective
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


def tiny_teacher(seed: int = 0, steps: int = 4) -> WorldModel:
    from worldforge.training.pretrain import build_model

    model = build_model(config(f"sampler.steps={steps}"))
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

    teacher = tiny_teacher()
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


def test_resume_mid_distillation_reproduces_the_uninterrupted_run(
    project, dataset, teacher_package, tmp_path, monkeypatch
):
    from worldforge.training import tasks
    from worldforge.training.trainer import TrainingInterrupted

    distill_cfg = DistillConfig(method="progressive", steps=1, train_steps=3, lr=1e-3)
    straight = distill_package(
        teacher_package,
        config(f"train.checkpoint_dir={tmp_path / 'a'}"),
        distill_cfg,
        dataset,
        tmp_path / "a-out",
    )

    resumed_cfg = config(f"train.checkpoint_dir={tmp_path / 'b'}")
    real = tasks.train_batches
    interrupt = SignalAt(draw_at=3 + 2)  # round 0 draws 3 batches; stop in round 1 at step 2
    monkeypatch.setattr(tasks, "train_batches", lambda *args: interrupt.wrap(real(*args)))
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 2/3"):
        distill_package(teacher_package, resumed_cfg, distill_cfg, dataset, tmp_path / "b-out")
    assert not (tmp_path / "b-out").exists()
    monkeypatch.setattr(tasks, "train_batches", real)
    distill_package(teacher_package, resumed_cfg, distill_cfg, dataset, tmp_path / "b-out", resume=True)

    expected, state = load_package(straight).state, load_package(tmp_path / "b-out").state
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    rounds = json.loads((tmp_path / "b-out" / DISTILLATION_FILE).read_text())["rounds"]
    assert [r["steps"] for r in rounds] == [3, 3]


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
