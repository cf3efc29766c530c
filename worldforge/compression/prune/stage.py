"""Structured pruning: a world-model package in, a physically smaller package out.

    scores = importance_scores(model, calibration clips, method)   prune_importance.py
    plan   = plan_pruning(model, scores, config.prune)              prune_plan.py
    pruned = apply_plan(model, plan)                                prune_surgery.py
    pruned = recover(config, ..., pruned, teacher=model, ...)       prune_recovery.py

Whole attention heads, MLP channels and blocks are removed; the pruned model's config
(`model.depth`, `model.heads_per_block`, `model.mlp_hidden_per_block`) describes the smaller
network, so it loads, counts its FLOPs and rolls out with the KV cache like any other model.

What runs on what:
- MLP channel removal uses `modelopt.torch.nas` (FastNAS's dynamic-module search space: one
  hparam for fc1's output width = fc2's input width, our importance order enforced on it, then
  exported to plain `nn.Linear`s).
- Head and block removal are plain torch: FastNAS cannot trace the attention (the fused qkv is
  unpacked into q, k, v: "Proxy object cannot be iterated") nor give a `ModuleList` a depth
  hparam, and modelopt's Minitron mode, which prunes heads and depth, only takes Megatron-Core
  models. FastNAS's own search (a sensitivity map over every width choice, one score evaluation
  each) is not used: it could only search MLP widths here, while a params/FLOPs target has to be
  met across heads, channels and blocks, which `prune_plan.py` does from the importance scores.
- Importance scores are plain torch hooks on the DiT (`prune_importance.py`).
- Recovery runs on the shared DeepSpeed `Trainer` (`worldforge.training`).

`target: {params: 0.7}` keeps at most 70% of the DiT's parameters (see `prune_config.py`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldforge.compression.prune.config import PruneConfig
from worldforge.compression.prune.importance import ImportanceScores, importance_scores
from worldforge.compression.prune.plan import PrunePlan, dit_flops, plan_pruning
from worldforge.compression.prune.recovery import recover as run_recovery
from worldforge.compression.prune.surgery import apply_plan
from worldforge.compression.stage import open_parent, publish, stage_lineage, stage_run
from worldforge.config import WorldforgeConfig
from worldforge.core.project import Project
from worldforge.data.loader import make_loader
from worldforge.models.flops import count_parameters, rollout_flops
from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import save_package
from worldforge.packages.lineage import Lineage
from worldforge.training.launch import barrier, setup_distributed
from worldforge.training.tasks import check_dataset

PRUNING_FILE = "pruning.json"
STAGE = "prune"


@dataclass
class PruneResult:
    model: WorldModel  # the pruned model (a new module; the source is untouched)
    plan: PrunePlan
    scores: ImportanceScores


def prune_model(
    model: WorldModel, batches: Iterable[dict[str, torch.Tensor]], config: PruneConfig, seed: int = 0
) -> PruneResult:
    """Score `model` on calibration `batches` (frames (B, T, C, H, W), actions), plan to
    `config.target` and cut. Deterministic for a given model, batches and seed."""
    scores = importance_scores(model, batches, config.method, config.calibration_clips, seed)
    plan = plan_pruning(model, scores, config)
    return PruneResult(apply_plan(model, plan), plan, scores)


def model_cost(model: WorldModel) -> dict[str, float]:
    """Counted (not timed) cost, with the metric names of `worldforge.evaluation`."""
    flops = rollout_flops(model)
    return {
        "parameters": count_parameters(model),
        "parameters_dit": count_parameters(model.dit),
        "flops_per_frame": flops["total"],
        "flops_per_frame_denoise": flops["denoise"],
        "flops_per_frame_dit": dit_flops(flops),
    }




def prune_package(
    source: str | Path,
    config: WorldforgeConfig,
    prune_cfg: PruneConfig,
    dataset_path: str | Path,
    out: str | Path,
    recover: bool,
    track: bool = False,
) -> Path:
    """Prune the package at `source` (folder or `models:/` URI) and write the result to `out`.

    config: the root config (`data` reads the clips, `train` runs recovery, `project` gives the
    seed and the MLflow experiment). prune_cfg: the `prune` section. dataset_path: the dataset
    whose `prune_cfg.calibration_split` scores the units and whose train split recovery trains on.
    recover: fine-tune the pruned model for `prune_cfg.recovery.steps` steps with distillation
    from the unpruned one (prune_recovery.py). track: record an MLflow stage run `prune`.

    The package holds config.json (the pruned architecture), the weights, lineage.json (parent,
    dataset, stage, git sha, MLflow run id), metrics.json (counted cost) and pruning.json (the
    plan, every importance score, cost before and after, the recovery run). Returns `out`.
    Under a launcher every rank calls this (recovery is collective); rank 0 writes the package."""
    out, dataset = Path(out), Path(dataset_path)
    recover = recover and prune_cfg.recovery.steps > 0
    info, device = setup_distributed(config.train.device)  # a world of one without a launcher
    parent = open_parent(source, config, track=track and info.is_main)
    teacher = parent.package.build(device)
    check_dataset(teacher, dataset)
    # Rank 0's view of the split on every rank: every process scores the same clips, so all cut alike.
    calibration = make_loader(dataset, prune_cfg.calibration_split, config.data, rank=0, world_size=1)
    lineage = stage_lineage(STAGE, parent, dataset, {"target": dict(prune_cfg.target)})
    with stage_run(track and info.is_main, STAGE, config, prune_cfg, lineage):
        result = prune_model(teacher, calibration, prune_cfg, seed=config.project.seed)
        before, after = model_cost(teacher), model_cost(result.model)
        record: dict[str, Any] = {
            "config": prune_cfg.model_dump(mode="json"),
            "plan": result.plan.as_dict(),
            "scores": result.scores.as_dict(),
            "before": before,
            "after": after,
            "kept": {key: after[key] / before[key] for key in ("parameters_dit", "flops_per_frame_dit")},
            "recovery": None,
        }
        model = result.model
        if recover:
            checkpoints = config.train.checkpoint_dir or Project.current().checkpoints / out.name
            model, record["recovery"] = run_recovery(
                config, prune_cfg.recovery, model, teacher, dataset, Path(checkpoints), track and info.is_main
            )
        lineage.params.update({"plan": _plan_summary(record), "recovered": bool(record["recovery"])})
        if info.is_main:
            _write(out, model, lineage, record)
            if track:
                publish(out, _metrics(record))
    barrier()
    return out


def _metrics(record: dict[str, Any]) -> dict[str, float]:
    sections = ("before", "after", "kept")
    metrics = {f"{section}.{key}": value for section in sections for key, value in record[section].items()}
    if record["recovery"]:
        recovery = record["recovery"]
        metrics.update({"recovery.loss_first": recovery["loss_first"], "recovery.loss_last": recovery["loss_last"]})
    return metrics


def _plan_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What lineage.json keeps of the plan (pruning.json has all of it): the shape and what it kept."""
    blocks = record["plan"]["blocks"]
    return {
        "depth": len(blocks),
        "heads": [len(block["heads"]) for block in blocks],
        "mlp_hidden": [len(block["channels"]) for block in blocks],
        "kept": record["kept"],
    }


def _write(out: Path, model: WorldModel, lineage: Lineage, record: dict[str, Any]) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        details = Path(scratch) / PRUNING_FILE
        details.write_text(json.dumps(record, indent=2, sort_keys=True))
        return save_package(
            out, package_config(model), model, lineage, record["after"], extras={PRUNING_FILE: details}
        )
