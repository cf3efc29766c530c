"""Training throughput per ZeRO stage for a preset, on the current device, in one run.

    python benchmarks/train_throughput.py quickstart
    python benchmarks/train_throughput.py h100-base --stages zero0 zero2 zero3 --steps 30
    torchrun --standalone --nproc_per_node 8 benchmarks/train_throughput.py h100-base   # data parallel

Each DeepSpeed config trains the preset's world model with the real trainer (engine, schedule,
EMA, clipping) on synthetic clips of the preset's shape (the loader has its own benchmark,
benchmarks/data_loader.py), for `--warmup` steps and then `--steps` timed ones; samples/s and
tokens/s are over the timed steps and all processes; MFU where the device's peak is known.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from worldforge.config import WorldforgeConfig, load_config
from worldforge.core.runtime import seed_everything
from worldforge.models.world_model import WorldModel, package_config
from worldforge.training.tasks import WorldObjective, tokens_per_clip
from worldforge.training.trainer import Task, Trainer


class SyntheticClips:
    """Random clips of the preset's shape, drawn once and cycled (the data costs nothing)."""

    def __init__(self, config: WorldforgeConfig, count: int = 4):
        b, t = config.train.batch_size, config.data.clip_frames
        h, w = config.tokenizer.frame_size
        model = config.model
        self.batches = []
        for _ in range(count):
            actions = (
                torch.randint(0, model.num_actions, (b, t))
                if model.action_space == "discrete"
                else torch.randn(b, t, model.action_dim)
            )
            self.batches.append(
                {
                    "frames": torch.rand(b, t, config.tokenizer.frame_channels, h, w) * 2 - 1,
                    "actions": actions,
                }
            )
        self.drawn = 0

    def __next__(self) -> dict[str, torch.Tensor]:
        self.drawn += 1
        return self.batches[self.drawn % len(self.batches)]

    def state(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def restore(self, state: dict[str, int]) -> None:
        self.drawn = state["drawn"]


def measure(config: WorldforgeConfig, stage: str, warmup: int, steps: int, folder: Path) -> dict[str, float]:
    """Rates of the last `steps` of `warmup + steps` optimizer steps under DeepSpeed config `stage`."""
    timed_windows = max(1, steps // warmup)
    train = config.train.model_copy(
        update={
            "deepspeed": stage,
            "steps": warmup * (1 + timed_windows),
            "log_every": warmup * timed_windows,  # one log window = the timed steps
            "checkpoint_every": 0,
            "max_minutes": None,
        }
    )
    seed_everything(config.project.seed)
    model = WorldModel(config.tokenizer, config.model, config.objective, config.sampler)
    model.tokenizer.requires_grad_(False)
    task = Task(
        name=f"benchmark-{stage}",
        objective=WorldObjective(model),
        batches=SyntheticClips(config),
        package_prefix="model.",
        package_config=package_config(model),
        tokens_per_sample=tokens_per_clip(model, config.data.clip_frames),
    )
    trainer = Trainer(task, train, steps=train.steps, lr=train.lr, seed=0, checkpoint_dir=folder / stage)
    result = trainer.fit()
    rates = dict(result.rates)
    rates["zero_stage"] = trainer.zero_stage
    rates["parameters_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    rates["world_size"] = trainer.world
    rates["device"] = str(trainer.device)
    rates["precision"] = trainer.precision
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset", nargs="?", default="quickstart")
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[])
    parser.add_argument("--stages", nargs="+", default=["zero0", "zero1", "zero2", "zero3"])
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps (rounded to a multiple of --warmup)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.preset, args.overrides)
    rows = []
    with tempfile.TemporaryDirectory(prefix="worldforge-bench-") as folder:
        for stage in args.stages:
            rows.append((stage, measure(config, stage, args.warmup, args.steps, Path(folder))))
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    from rich.console import Console
    from rich.table import Table

    first = rows[0][1]
    table = Table(
        title=f"train throughput: {args.preset}, {first['parameters_m']:.2f}M parameters, {first['world_size']} x "
        f"{first['device']} {first['precision']}, micro-batch {config.train.batch_size} x accumulation "
        f"{config.train.grad_accumulation}, {config.data.clip_frames} frames per clip"
    )
    for column in ("config", "ZeRO", "samples/s", "tokens/s", "TFLOP/s", "MFU"):
        table.add_column(column, justify="right")
    for stage, rates in rows:
        mfu = f"{rates['mfu']:.1%}" if "mfu" in rates else "n/a (peak unknown)"
        tflops = f"{rates['tflops']:.3f}" if "tflops" in rates else "-"
        table.add_row(
            stage,
            str(rates["zero_stage"]),
            f"{rates['samples_per_s']:.2f}",
            f"{rates['tokens_per_s']:.0f}",
            tflops,
            mfu,
        )
    Console().print(table)


if __name__ == "__main__":
    main()
