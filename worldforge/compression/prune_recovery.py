"""Recovery after pruning: fine-tune the pruned DiT against the unpruned one, on the shared trainer.

The loss of a batch of clips, on one noisy input shared by both models:

    task_weight * |v_pruned - (eps - x0)|^2  +  distill_weight * |v_pruned - v_unpruned|^2

the first the flow-matching loss of pretraining (same noise-level sampling, same clean-context
frames), the second distillation from the frozen unpruned teacher, whose velocity carries more
signal per sample than the noisy flow-matching target. The tokenizer is shared and frozen (pruning
never touches it). `Trainer` (DeepSpeed, EMA, checkpoints, validation rollouts) runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldforge.compression.prune_config import RecoveryConfig
from worldforge.models.objective import sample_noise_levels
from worldforge.models.world_model import WorldModel, build_world_model, package_config
from worldforge.platform.config import WorldforgeConfig


class RecoveryObjective(nn.Module):
    """`forward(batch) -> (loss, logs)`; trains `model` (the pruned DiT), `teacher` stays frozen."""

    def __init__(self, model: WorldModel, teacher: WorldModel, config: RecoveryConfig):
        super().__init__()
        self.model, self.teacher, self.config = model, teacher, config
        model.tokenizer.requires_grad_(False)
        model.dit.requires_grad_(True)
        teacher.requires_grad_(False)
        teacher.eval()

    def train(self, mode: bool = True) -> RecoveryObjective:
        super().train(mode)
        self.teacher.eval()  # the teacher is a fixed function, whatever the trainer switches
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # frames (B, T, C, H, W) in [-1, 1]; actions (B, T) or (B, T, A)
        model, objective = self.model, self.model.objective_cfg
        with torch.no_grad():
            clean = model.tokenizer.encode(batch["frames"])  # (B, T', c, h, w)
        b, t = clean.shape[:2]
        condition = model.action_condition(batch["actions"], t)
        levels = sample_noise_levels(b, t, objective, clean.device)  # (B, T')
        weight = torch.ones_like(levels)
        if objective.clean_context_prob > 0 and t > 1:  # as flow_matching_loss: clean context, no loss on it
            split = torch.randint(1, t, (b, 1), device=clean.device)
            chosen = torch.rand(b, 1, device=clean.device) < objective.clean_context_prob
            context = chosen & (torch.arange(t, device=clean.device)[None, :] < split)  # (B, T')
            levels, weight = levels.masked_fill(context, 0.0), weight.masked_fill(context, 0.0)
        noise = torch.randn_like(clean)
        expand = levels[:, :, None, None, None].to(clean.dtype)
        noisy = (1 - expand) * clean + expand * noise
        velocity = model.velocity(noisy, levels, condition).float()  # (B, T', c, h, w)
        with torch.no_grad():
            target = self.teacher.velocity(noisy, levels, condition).float()
        task = self._weighted(velocity - (noise - clean).float(), weight)
        distill = self._weighted(velocity - target, weight)
        loss = self.config.task_weight * task + self.config.distill_weight * distill
        return loss, {"loss": loss.detach(), "task_loss": task.detach(), "distill_loss": distill.detach()}

    @staticmethod
    def _weighted(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        per_frame = error.pow(2).flatten(2).mean(dim=2)  # (B, T')
        return (per_frame * weight).sum() / weight.sum()


def recover(
    config: WorldforgeConfig,
    recovery: RecoveryConfig,
    pruned: WorldModel,
    teacher: WorldModel,
    dataset: Path,
    checkpoint_dir: Path,
    track: bool,
) -> tuple[WorldModel, dict[str, Any]]:
    """Fine-tune `pruned` for `recovery.steps` steps on `dataset`'s train split (micro-batch, engine,
    EMA, validation from `config.train`). Collective under a launcher.

    Returns the recovered model (the trainer's package weights: EMA when enabled) and a record of
    the run (steps, how it stopped, first/last losses, final validation)."""
    from worldforge.training.tasks import tokens_per_clip, train_batches, world_validation
    from worldforge.training.trainer import Task, Trainer

    package = package_config(pruned)
    trainer = Trainer(
        Task(
            name="prune_recovery",
            objective=RecoveryObjective(pruned, teacher, recovery),
            batches=train_batches(config, dataset, *_rank(config)),
            package_prefix="model.",
            package_config=package,
            tokens_per_sample=tokens_per_clip(pruned, config.data.clip_frames),
            validate=world_validation(config, dataset, package),
        ),
        config.train,
        steps=recovery.steps,
        lr=recovery.lr,
        seed=config.project.seed,
        checkpoint_dir=checkpoint_dir,
        track=track,
    )
    result = trainer.fit()
    recovered = build_world_model(package)
    recovered.load_state_dict(trainer.package_state(), strict=True)
    window = max(1, min(10, len(result.losses)))
    record = {
        "steps": result.step,
        "stopped": result.stopped,
        "loss_first": sum(result.losses[:window]) / window,
        "loss_last": sum(result.losses[-window:]) / window,
        "validation": result.metrics,
    }
    return recovered.eval(), record


def _rank(config: WorldforgeConfig) -> tuple[int, int]:
    """(rank, world size) of this process in the trainer's process group."""
    from worldforge.training.launch import setup_distributed

    info, _ = setup_distributed(config.train.device)
    return info.rank, info.world_size
