"""The DeepSpeed config of a run: a JSON from `infra/deepspeed/` (ZeRO stage, offload, buckets)
completed with what the worldforge `train` section decides (batch sizes, optimizer, clipping,
precision), so that each value has one home. The learning-rate schedule is not DeepSpeed's
(`schedule.py`: its warmup starts at lr 0 on step 1); it is handed to `deepspeed.initialize`.

    build_deepspeed_config(train, lr=3e-4, world_size=2, precision="bf16") -> dict

A JSON that sets one of the keys the train section owns fails with an error naming the file and
the key (the value "auto" is accepted and replaced, as in the Hugging Face integration).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from worldforge.errors import WorldforgeError
from worldforge.training.config import TrainConfig

# Keys the train section owns; a DeepSpeed JSON may leave them out or set them to "auto".
DERIVED = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "optimizer",
    "scheduler",
    "gradient_clipping",
    "bf16",
    "fp16",
)


class DeepSpeedConfigError(WorldforgeError, ValueError):
    """A DeepSpeed JSON that cannot be used; names the file and the key."""


def config_dirs() -> list[Path]:
    """Where a config name (`zero2`) is looked up: `<root>/infra/deepspeed`, then the source checkout's."""
    dirs = []
    if os.environ.get("WORLDFORGE_ROOT"):
        dirs.append(Path(os.environ["WORLDFORGE_ROOT"]) / "infra" / "deepspeed")
    dirs.append(Path(__file__).resolve().parents[2] / "infra" / "deepspeed")
    return dirs


def known_configs() -> list[str]:
    return sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.json")})


def resolve_deepspeed_file(name: str | Path) -> Path:
    """A JSON path as given, or a name (`zero3-offload`) found in `config_dirs()`."""
    path = Path(name)
    if path.suffix == ".json":
        if not path.is_file():
            raise DeepSpeedConfigError(f"{path}: DeepSpeed config file not found (train.deepspeed)")
        return path
    for directory in config_dirs():
        if (directory / f"{name}.json").is_file():
            return directory / f"{name}.json"
    raise DeepSpeedConfigError(
        f"train.deepspeed={name!r}: no {name}.json in {', '.join(str(d) for d in config_dirs())}; "
        f"known: {', '.join(known_configs()) or 'none'}, or give a path to a .json file"
    )


def read_deepspeed_file(path: Path) -> dict[str, Any]:
    try:
        tree = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise DeepSpeedConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(tree, dict):
        raise DeepSpeedConfigError(f"{path}: expected a JSON object at the top level")
    owned = [key for key in DERIVED if key in tree and tree[key] != "auto"]
    if owned:
        raise DeepSpeedConfigError(
            f"{path}: sets {', '.join(owned)}, which worldforge derives from the train section "
            "(train.batch_size, train.grad_accumulation, train.lr, train.grad_clip, train.precision); "
            'remove them or set them to "auto"'
        )
    stage = tree.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise DeepSpeedConfigError(f"{path}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    return {key: value for key, value in tree.items() if key not in DERIVED}


def zero_stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(config: dict[str, Any]) -> bool:
    return config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"


def build_deepspeed_config(
    train: TrainConfig, *, lr: float, world_size: int, precision: str
) -> dict[str, Any]:
    """The complete DeepSpeed config of a run at peak learning rate `lr`.

    precision: "fp32" or "bf16" (already resolved from "auto")."""
    tree = read_deepspeed_file(resolve_deepspeed_file(train.deepspeed))
    offload = offloads_optimizer(tree)
    tree.update(
        train_micro_batch_size_per_gpu=train.batch_size,
        gradient_accumulation_steps=train.grad_accumulation,
        train_batch_size=train.batch_size * train.grad_accumulation * world_size,
        gradient_clipping=train.grad_clip,
        bf16={"enabled": precision == "bf16"},
        optimizer={
            "type": "AdamW",
            "params": {
                "lr": lr,
                "betas": list(train.betas),
                "eps": 1e-8,
                "weight_decay": train.weight_decay,
                # torch's AdamW: nothing to compile; ZeRO-Offload needs DeepSpeed's CPU Adam instead.
                **({} if offload else {"torch_adam": True}),
            },
        },
    )
    return tree
