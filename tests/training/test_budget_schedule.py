"""A wall-clock budget and the learning rate: with `train.lr_schedule: budget` a run stopped by
`train.max_minutes` long before its steps ends at the cosine's floor (a slower machine's model is
annealed, not cut off mid-schedule); a resumed run goes on with what is left of its budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldforge.training.checkpoint import load_tensors
from worldforge.training.pretrain import build_model
from worldforge.training.tasks import world_task
from worldforge.training.trainer import Trainer

LR, FLOOR = 1e-3, 0.1


def trainer(config, dataset: Path, checkpoints: Path) -> Trainer:
    task = world_task(config, build_model(config), dataset, rank=0, world_size=1)
    task.validate = None
    return Trainer(
        task, config.train, steps=config.train.steps, lr=config.train.lr, seed=0, checkpoint_dir=checkpoints
    )


@pytest.mark.parametrize("schedule", ["budget", "steps"])
def test_a_run_stopped_by_its_budget_ends_annealed_only_on_the_budget_schedule(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path, schedule: str
):
    config = tiny_config(
        "train.steps=100000",
        "train.max_minutes=0.05",  # 3 s: tens of steps of 100000
        "train.warmup_steps=1",
        f"train.lr={LR}",
        f"train.min_lr_ratio={FLOOR}",
        f"train.lr_schedule={schedule}",
        "train.ema_decay=0",
    )
    run = trainer(config, tiny_dataset, tmp_path / "run")
    result = run.fit()
    assert result.stopped == "time budget" and 2 < result.step < 1000
    lr = run.engine.get_lr()[0]
    if schedule == "budget":  # the last step's lr followed a share of the budget close to all of it
        assert FLOOR * LR <= lr < 0.3 * LR
    else:  # the steps schedule is a few tens of steps into 100000: still at its peak
        assert lr > 0.99 * LR


def test_a_resumed_run_goes_on_with_what_is_left_of_its_budget(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path
):
    first = trainer(tiny_config("train.steps=6", "train.ema_decay=0"), tiny_dataset, tmp_path / "run")
    assert first.fit().step == 6
    spent = load_tensors(tmp_path / "run" / "step00000006" / "trainer_rank0.pt")["elapsed_s"]
    assert spent > 0
    # The same run, resumed with a budget it had already spent: one step, then it stops (given the
    # budget afresh, it would take about five).
    config = tiny_config("train.steps=100000", f"train.max_minutes={0.9 * spent / 60}", "train.ema_decay=0")
    resumed = trainer(config, tiny_dataset, tmp_path / "run")
    result = resumed.fit(resume=True)
    assert result.stopped == "time budget" and result.step == 7
