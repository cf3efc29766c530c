"""A model package from a checkpoint folder, on demand, in one process (no GPU, no process group):

    export_checkpoint(<root>/checkpoints/<run>/step00001000, out) -> out

Raw weights come from DeepSpeed's own consolidation of the ZeRO checkpoint (`zero_to_fp32`, ZeRO
1-3) or, under ZeRO-0, from the module saved whole; EMA weights from the per-rank EMA shares in `trainer_rank{r}.pt`, put back together in
rank order (each share is a contiguous, padded 1/world_size chunk of the flattened parameter).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from worldforge.packages import load_package, save_package
from worldforge.packages.lineage import project_path
from worldforge.training.checkpoint import COMPLETE, CheckpointError, load_tensors


def _record(folder: Path) -> dict[str, Any]:
    if not (folder / COMPLETE).is_file():
        raise CheckpointError(f"{folder}: no {COMPLETE}, not a complete worldforge checkpoint")
    return json.loads((folder / COMPLETE).read_text())


def _ema_weights(
    folder: Path, world_size: int, prefix: str, shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Whole EMA parameters (keys without `prefix`) from every rank's share."""
    shares = [
        load_tensors(folder / f"trainer_rank{rank}.pt")["ema"]
        for rank in range(world_size)
    ]
    if shares[0] is None:
        raise CheckpointError(f"{folder}: the run kept no EMA (train.ema_decay=0); export the raw weights")
    weights = {}
    for name in shares[0]["shadow"]:
        key = name.removeprefix(prefix)
        flat = torch.cat([share["shadow"][name] for share in shares])
        weights[key] = flat[: math.prod(shapes[key])].view(shapes[key])
    return weights


def export_checkpoint(
    folder: str | Path, out: str | Path, weights: str = "ema", lineage: dict[str, Any] | None = None
) -> Path:
    """Write the package of checkpoint `folder` (a `stepNNNNNNNN` folder) to `out`.

    weights: "ema" (as the run's own package; falls back to raw when the run kept no EMA) or "raw".
    Raises CheckpointError naming the folder when it is incomplete."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = Path(folder)
    record = _record(folder)
    config, prefix = record["package_config"], record["package_prefix"]
    if record["deepspeed"].get("zero_optimization", {}).get("stage", 0) == 0:
        # ZeRO-0 saves the module whole (in the training precision); zero_to_fp32 does not read it.
        raw = load_tensors(folder / "mp_rank_00_model_states.pt")[
            "module"
        ]
    else:
        raw = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    state = {k.removeprefix(prefix): v.float() for k, v in raw.items() if k.startswith(prefix)}
    if (
        weights == "ema"
        and load_tensors(folder / "trainer_rank0.pt")["ema"]
    ):
        shapes = {name: tensor.shape for name, tensor in state.items()}
        state.update(_ema_weights(folder, record["world_size"], prefix, shapes))
    lineage = {
        "stage": record.get("task") or "export",
        "checkpoint": project_path(folder),
        "steps": record["step"],
        **(lineage or {}),
    }
    save_package(out, config, state, lineage=lineage)
    load_package(out)  # every tensor present, with the shapes config.json implies (else PackageError)
    return Path(out)
