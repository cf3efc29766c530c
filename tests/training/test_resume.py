"""An interrupted run continues as if it had not been interrupted: SIGTERM at step k checkpoints
and stops; resuming reaches step n with the uninterrupted run's weights, EMA and loss curve. A
checkpoint also becomes a package on demand, offline, with the live engine's weights."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from worldforge.packages import load_package
from worldforge.training.consolidate import consolidated_state
from worldforge.training.export import export_checkpoint
from worldforge.training.pretrain import build_model
from worldforge.training.tasks import world_task
from worldforge.training.trainer import Trainer, TrainingInterrupted

STEPS, INTERRUPT_AT = 6, 3
OVERRIDES = ["train.steps=6", "train.ema_decay=0.9", "train.checkpoint_every=2", "train.keep_checkpoints=2"]


class SignalAt:
    """The task's batches, sending this process SIGTERM as the batch for step `step` is drawn
    (as a cluster scheduler would, mid-step)."""

    def __init__(self, batches, step: int, per_step: int):
        self.batches, self.draw_at = batches, (step - 1) * per_step + 1
        self.drawn = 0

    def __next__(self):
        self.drawn += 1
        if self.drawn == self.draw_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.batches)

    def state(self):
        return self.batches.state()

    def restore(self, state):
        self.batches.restore(state)


def trainer(config, dataset: Path, checkpoints: Path, interrupt_at: int | None = None) -> Trainer:
    task = world_task(config, build_model(config), dataset, rank=0, world_size=1)
    task.validate = None
    if interrupt_at:
        task.batches = SignalAt(task.batches, interrupt_at, config.train.grad_accumulation)
    return Trainer(
        task, config.train, steps=config.train.steps, lr=config.train.lr, seed=0, checkpoint_dir=checkpoints
    )


def weights(run: Trainer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(raw weights, EMA weights) of the world model."""
    return consolidated_state(run.engine.module, "model."), run.package_state()


@pytest.mark.parametrize("deepspeed", ["zero2", "zero3"])
def test_resume_after_sigterm_reproduces_the_uninterrupted_run(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path, deepspeed: str
):
    config = tiny_config(*OVERRIDES, f"train.deepspeed={deepspeed}", "train.grad_accumulation=2")
    straight = trainer(config, tiny_dataset, tmp_path / "straight")
    reference = straight.fit()
    assert reference.step == STEPS
    reference_raw, reference_ema = weights(straight)
    exported = load_package(export_checkpoint(reference.checkpoint, project.packages / "on-demand")).state
    raw_export = load_package(
        export_checkpoint(reference.checkpoint, project.packages / "raw", weights="raw")
    ).state
    for name in reference_raw:  # offline consolidation (no engine) gives the live engine's weights
        torch.testing.assert_close(exported[name], reference_ema[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(raw_export[name], reference_raw[name], rtol=0, atol=0, msg=name)

    interrupted = trainer(config, tiny_dataset, tmp_path / "interrupted", interrupt_at=INTERRUPT_AT)
    with pytest.raises(TrainingInterrupted, match=f"SIGTERM at step {INTERRUPT_AT}/{STEPS}") as stopped:
        interrupted.fit()
    assert stopped.value.checkpoint.name == f"step{INTERRUPT_AT:08d}"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the trainer's handler is gone again
    assert interrupted.losses == pytest.approx(reference.losses[:INTERRUPT_AT], rel=1e-6)

    resumed = trainer(config, tiny_dataset, tmp_path / "interrupted")  # a new process would do the same
    result = resumed.fit(resume=True)
    assert result.step == STEPS
    assert result.losses == pytest.approx(reference.losses[INTERRUPT_AT:], rel=1e-5, abs=1e-6)
    raw, ema = weights(resumed)
    for name in reference_raw:
        torch.testing.assert_close(raw[name], reference_raw[name], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ema[name], reference_ema[name], rtol=1e-5, atol=1e-6, msg=name)
    kept = sorted(p.name for p in (tmp_path / "interrupted").glob("step*"))
    assert kept == ["step00000004", "step00000006"]  # the newest 2


def test_starting_fresh_over_old_checkpoints_removes_them(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path
):
    config = tiny_config("train.steps=2", "train.checkpoint_every=1", "train.ema_decay=0")
    trainer(config, tiny_dataset, tmp_path / "run").fit()
    again = trainer(
        config.model_copy(update={"train": config.train.model_copy(update={"steps": 1})}),
        tiny_dataset,
        tmp_path / "run",
    )
    again.fit()  # not resume: a new run
    assert sorted(p.name for p in (tmp_path / "run").glob("step*")) == ["step00000001"]
