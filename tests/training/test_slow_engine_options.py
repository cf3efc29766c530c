"""Engine options that cost minutes on a fresh machine (DeepSpeed compiles its CPU Adam on first
use; torch.compile compiles the model): they train like the plain engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldforge.training.pretrain import build_model
from worldforge.training.tasks import world_task
from worldforge.training.trainer import Trainer

pytestmark = pytest.mark.slow


def losses(config, dataset: Path, checkpoints: Path) -> list[float]:
    task = world_task(config, build_model(config), dataset, rank=0, world_size=1)
    task.validate = None
    run = Trainer(
        task, config.train, steps=config.train.steps, lr=config.train.lr, seed=0, checkpoint_dir=checkpoints
    )
    return run.fit().losses


@pytest.mark.parametrize("option", ["train.deepspeed=zero2-offload", "train.compile=true"])
def test_engine_option_trains_like_the_plain_engine(
    project, tiny_config, tiny_dataset: Path, tmp_path: Path, option
):
    plain = losses(tiny_config("train.steps=4", "train.deepspeed=zero2"), tiny_dataset, tmp_path / "plain")
    other = losses(
        tiny_config("train.steps=4", "train.deepspeed=zero2", option), tiny_dataset, tmp_path / "other"
    )
    assert other == pytest.approx(plain, rel=2e-3)
