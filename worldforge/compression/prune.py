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

import contextlib
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldforge.compression.prune_config import PruneConfig
from worldforge.compression.prune_importance import ImportanceScores, importance_scores
from worldforge.compression.prune_plan import PrunePlan, dit_flops, plan_pruning
from worldforge.compression.prune_surgery import apply_plan
from worldforge.models.flops import count_parameters, rollout_flops
from worldforge.models.world_model import WorldModel, package_config
from worldforge.platform.config import WorldforgeConfig, flatten
from worldforge.platform.lineage import tracked_md5, version_package

PRUNING_FILE = "pruning.json"


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
    from worldforge.data.loader import make_loader
    from worldforge.platform.packages import load_package, package_md5
    from worldforge.platform.project import Project
    from worldforge.platform.tracking import git_sha
    from worldforge.training.launch import barrier, setup_distributed
    from worldforge.training.tasks import check_dataset

    out, dataset = Path(out), Path(dataset_path)
    recover = recover and prune_cfg.recovery.steps > 0
    info, device = setup_distributed(config.train.device)  # a world of one without a launcher
    package = load_package(source)
    teacher = package.build(device)
    check_dataset(teacher, dataset)
    # Rank 0's view of the split on every rank: every process scores the same clips, so all cut alike.
    calibration = make_loader(dataset, prune_cfg.calibration_split, config.data, rank=0, world_size=1)
    lineage: dict[str, Any] = {
        "stage": "prune",
        "parent": str(source),
        "parent_md5": package_md5(package.path),
        "dataset": str(dataset.resolve()),
        "dataset_md5": tracked_md5(dataset),
        "git_sha": git_sha(),
    }
    with _stage_run(track and info.is_main, config, prune_cfg, lineage) as run_id:
        lineage["mlflow_run_id"] = run_id
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
            from worldforge.compression.prune_recovery import recover as run_recovery

            checkpoints = config.train.checkpoint_dir or Project.current().checkpoints / out.name
            model, record["recovery"] = run_recovery(
                config, prune_cfg.recovery, model, teacher, dataset, Path(checkpoints), track and info.is_main
            )
        if info.is_main:
            _write(out, model, lineage, record)
            if track:
                _log(out, record)
    barrier()
    return out


def _log(out: Path, record: dict[str, Any]) -> None:
    from worldforge.platform import tracking

    for section in ("before", "after", "kept"):
        tracking.log_metrics({f"{section}.{key}": value for key, value in record[section].items()})
    if record["recovery"]:
        recovery = record["recovery"]
        tracking.log_metrics(
            {"recovery.loss_first": recovery["loss_first"], "recovery.loss_last": recovery["loss_last"]}
        )
    tracking.log_artifacts(out, "package")
    tracking.set_tags({"package.dvc_md5": version_package(out) or "untracked"})


def _stage_run(
    track: bool, config: WorldforgeConfig, prune_cfg: PruneConfig, lineage: dict[str, Any]
) -> contextlib.AbstractContextManager[str | None]:
    """The MLflow stage run `prune` (its id), or nothing (None) without tracking."""
    from worldforge.platform import tracking

    params = {**config.flat(), **flatten(prune_cfg.model_dump(mode="json"), "prune.")}
    tags = {"parent.model": lineage["parent"], "dataset.dvc_md5": lineage["dataset_md5"] or "untracked"}
    return tracking.optional_stage_run(track, "prune", config.project.experiment, params, tags)


def _write(out: Path, model: WorldModel, lineage: dict[str, Any], record: dict[str, Any]) -> Path:
    from worldforge.platform.packages import save_package

    with tempfile.TemporaryDirectory() as scratch:
        details = Path(scratch) / PRUNING_FILE
        details.write_text(json.dumps(record, indent=2, sort_keys=True))
        return save_package(
            out, package_config(model), model, lineage, record["after"], extras={PRUNING_FILE: details}
        )
