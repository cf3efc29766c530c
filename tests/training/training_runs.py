"""Training runs that the distributed tests compare, in-process or under torchrun:

    torchrun --standalone --nproc_per_node 2 tests/training/training_runs.py OUT -o train.deepspeed=zero3 ...
    torchrun ... tests/training/training_runs.py OUT DATASET --dmd-teacher PACKAGE -o ...   (DMD distillation)

The tiny world model is trained through the real stage (`run_stage`: MLflow on rank 0, DeepSpeed,
package, DVC) on clips indexed globally: micro-batch g of a run is the same clips whatever the
number of processes (rank r's n-th draw is g = n * world_size + r), so one process with gradient
accumulation k and k processes without it see the same clips in every optimizer step.

The torchrun workers reduce over gloo without DeepSpeed's shared-memory all-reduce op: building
that op is a C++ compile of 40-90 s on 2 cores, once per machine, and the tests are about what
the processes compute, not how DeepSpeed moves their gradients (`launch.skip_shared_memory_op`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from worldforge.config import WorldforgeConfig, load_config

# The `tiny` preset (tests/conftest.py's `tiny_config`: 32x32 frames, a 2-block DiT) with 24
# episodes, so that two ranks each get whole shards, and a few steps at a fixed learning rate.
# (This module is also the torchrun worker, outside pytest: it loads the preset itself.)
TINY = ["data.episodes=24", "train.steps=6", "train.lr=1e-3"]


def tiny_config(*overrides: str) -> WorldforgeConfig:
    """The `tiny` preset at the training tests' scale; later overrides win."""
    return load_config("tiny", TINY + list(overrides))


class GlobalClips:
    """Micro-batches cut from a bank of clips by their global index g (cyclic over the bank)."""

    def __init__(self, bank: dict[str, torch.Tensor], batch_size: int, rank: int, world_size: int):
        self.bank, self.batch_size, self.rank, self.world_size = bank, batch_size, rank, world_size
        self.size = len(bank["frames"])
        self.drawn = 0

    def __next__(self) -> dict[str, torch.Tensor]:
        g = self.drawn * self.world_size + self.rank
        self.drawn += 1
        index = torch.tensor([(g * self.batch_size + i) % self.size for i in range(self.batch_size)])
        return {key: value[index] for key, value in self.bank.items()}

    def state(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def restore(self, state: dict[str, int]) -> None:
        self.drawn = state["drawn"]


def load_bank(dataset: Path, config) -> dict[str, torch.Tensor]:
    """Every training clip of the dataset, in the loader's unshuffled order."""
    from worldforge.data.loader import make_loader

    loader_cfg = config.data.loader.model_copy(update={"shuffle_buffer": 1, "batch_size": 16})
    loader = make_loader(
        dataset, "train", config.data.model_copy(update={"loader": loader_cfg}), rank=0, world_size=1
    )
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in ("frames", "actions", "episode", "start")}


def equivalence_run(out: Path, dataset: Path, overrides: list[str]) -> Path:
    """Train with the global-index clips through `run_stage`; returns the package path."""
    from worldforge.models.world_model import package_config
    from worldforge.training.pretrain import build_model, run_stage
    from worldforge.training.tasks import WorldObjective, tokens_per_clip
    from worldforge.training.trainer import Task

    config = tiny_config(f"train.checkpoint_dir={out / 'checkpoints'}", *overrides)
    model = build_model(config)
    bank = load_bank(dataset, config)

    def make_task(rank: int, world_size: int) -> Task:
        return Task(
            name="world",
            objective=WorldObjective(model),
            batches=GlobalClips(bank, config.train.batch_size, rank, world_size),
            package_prefix="model.",
            package_config=package_config(model),
            tokens_per_sample=tokens_per_clip(model, config.data.clip_frames),
        )

    return run_stage(
        "pretrain_world",
        config,
        dataset,
        make_task,
        steps=config.train.steps,
        lr=config.train.lr,
        out_package=out / "package",
        resume=False,
        progress=False,
    )


def dmd_run(out: Path, dataset: Path, teacher: Path, overrides: list[str]) -> Path:
    """Distill `teacher` with DMD (1-step student, 2 steps: the student and the fake score, two
    engines) through the real stage; returns the student package."""
    from worldforge.compression.distill.config import DistillConfig
    from worldforge.compression.distill.stage import distill_package

    config = tiny_config(f"train.checkpoint_dir={out / 'checkpoints'}", *overrides)
    return distill_package(
        teacher,
        config,
        DistillConfig(method="dmd", steps=1, train_steps=2, lr=1e-3),
        dataset,
        out / "package",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument(
        "--dmd-teacher", type=Path, help="distill this package with DMD instead of pretraining"
    )
    parser.add_argument("-o", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    from worldforge.training.launch import skip_shared_memory_op

    skip_shared_memory_op()
    if args.dmd_teacher:
        dmd_run(args.out, args.dataset, args.dmd_teacher, args.overrides)
    else:
        equivalence_run(args.out, args.dataset, args.overrides)


if __name__ == "__main__":
    main()
