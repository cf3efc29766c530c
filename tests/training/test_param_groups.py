"""An objective whose players learn at their own rates (DMD's critic: `param_groups`) gets them from
the trainer's DeepSpeed optimizer, through warmup and schedule, and every group trains."""

from __future__ import annotations

from pathlib import Path

import torch

from worldforge.training.pretrain import build_model
from worldforge.training.tasks import world_task
from worldforge.training.trainer import Trainer

LR = 1e-3


def test_an_objectives_param_groups_keep_their_own_learning_rates_in_the_engine(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path
):
    config = tiny_config("train.steps=3", "train.warmup_steps=1", f"train.lr={LR}", "train.ema_decay=0")
    task = world_task(config, build_model(config), tiny_dataset, rank=0, world_size=1)
    task.validate = None
    trainable = [p for p in task.objective.parameters() if p.requires_grad]
    slow, fast = trainable[: len(trainable) // 2], trainable[len(trainable) // 2 :]
    task.objective.param_groups = lambda lr: [{"params": slow}, {"params": fast, "lr": 10 * lr}]
    before = [p.detach().clone() for p in (slow[0], fast[-1])]
    run = Trainer(task, config.train, steps=3, lr=LR, seed=0, checkpoint_dir=tmp_path / "run")
    run.fit()
    lrs = run.engine.get_lr()
    assert len(lrs) == 2 and abs(lrs[1] / lrs[0] - 10) < 1e-6 and lrs[0] <= LR
    assert not torch.equal(before[0], slow[0].detach()) and not torch.equal(before[1], fast[-1].detach())
