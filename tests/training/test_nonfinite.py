"""A NaN loss is detected and reported, never trained on: the bad micro-batch is skipped (the run
ends with the weights of a run that never saw it), and a loss that stays NaN stops the run with
the weights untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worldforge.training.consolidate import consolidated_state
from worldforge.training.pretrain import build_model
from worldforge.training.tasks import world_task
from worldforge.training.trainer import NonFiniteLossError, Trainer


class Corrupting:
    """The task's batches, with draw number `at` (1-based) poisoned with NaN frames, or left out."""

    def __init__(self, batches, at: set[int] | None, mode: str):
        self.batches, self.at, self.mode = batches, at, mode
        self.drawn = 0

    def __next__(self):
        batch = next(self.batches)
        self.drawn += 1
        if self.at is None or self.drawn in self.at:
            if self.mode == "drop":
                return next(self)
            batch = {**batch, "frames": torch.full_like(batch["frames"], float("nan"))}
        return batch

    def state(self):
        return self.batches.state()

    def restore(self, state):
        self.batches.restore(state)


def trainer(
    config, dataset: Path, checkpoints: Path, at: set[int] | None, mode: str, track: bool = False
) -> Trainer:
    task = world_task(config, build_model(config), dataset, rank=0, world_size=1)
    task.validate = None
    task.batches = Corrupting(task.batches, at, mode)
    return Trainer(
        task,
        config.train,
        steps=config.train.steps,
        lr=config.train.lr,
        seed=0,
        checkpoint_dir=checkpoints,
        track=track,
    )


def test_nan_batch_is_skipped_reported_and_not_trained_on(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path
):
    import mlflow

    from worldforge.core import tracking

    # ZeRO-3: the skipped micro-batch's forward gathered parameters that no backward releases.
    config = tiny_config("train.steps=4", "train.ema_decay=0", "train.deepspeed=zero3")
    clean = trainer(config, tiny_dataset, tmp_path / "clean", at={3}, mode="drop")
    clean_result = clean.fit()

    with tracking.stage_run("pretrain_world", "nan-test", project=project) as run:
        poisoned = trainer(config, tiny_dataset, tmp_path / "poisoned", at={3}, mode="nan", track=True)
        result = poisoned.fit()

    assert result.nonfinite_skipped == 1
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.losses == pytest.approx(clean_result.losses, rel=1e-6)
    expected = consolidated_state(clean.engine.module, "model.")
    for name, value in consolidated_state(poisoned.engine.module, "model.").items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7, msg=name)
    client = mlflow.MlflowClient()
    (skipped,) = client.get_metric_history(run.info.run_id, "train/nonfinite_skipped")
    assert (skipped.step, skipped.value) == (3, 1.0)  # draw 3 was step 3's micro-batch
    note = client.get_run(run.info.run_id).data.tags["train.nonfinite_last"]
    assert "non-finite loss" in note and "step 3" in note and "episode" in note


def test_loss_that_stays_nan_stops_the_run_with_weights_untouched(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path
):
    config = tiny_config("train.steps=4", "train.ema_decay=0", "train.max_nonfinite=2")
    run = trainer(config, tiny_dataset, tmp_path / "nan", at=None, mode="nan")
    before = consolidated_state(run.engine.module, "model.")
    with pytest.raises(NonFiniteLossError, match="non-finite on 3 micro-batches in a row") as error:
        run.fit()
    assert "weights are those of step 0" in str(error.value)
    assert run.skipped == 3 and run.step == 0
    for name, value in consolidated_state(run.engine.module, "model.").items():
        assert torch.equal(value, before[name]), name
