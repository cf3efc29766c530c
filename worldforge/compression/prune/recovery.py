"""Recovery after pruning: fine-tune the pruned DiT against the unpruned one, on the shared trainer.

The loss of a batch of clips, on one noisy input shared by both models:

    task_weight * |v_pruned - (eps - x0)|^2  +  distill_weight * |v_pruned - v_unpruned|^2

(with `objective.loss: x0`, on clean frames instead of velocities: |x0_pruned - x0|^2 + ...),
the first the flow-matching loss of pretraining (the same inputs: `training_inputs` of the model's
objective config), the second distillation from the frozen unpruned teacher, whose velocity carries more
signal per sample than the noisy flow-matching target. The tokenizer is shared and frozen (pruning
never touches it). `Trainer` (DeepSpeed, EMA, checkpoints, validation rollouts) runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from worldforge.compression.prune.config import RecoveryConfig
from worldforge.config import WorldforgeConfig
from worldforge.models.flow import to_velocity, to_x0
from worldforge.models.objective import network_output, training_inputs, weighted_frame_mse
from worldforge.models.world_model import WorldModel
from worldforge.training.tasks import FrozenTeacher, train_student


class RecoveryObjective(FrozenTeacher):
    """`forward(batch) -> (loss, logs)`; trains `model` (the pruned DiT), `teacher` stays frozen."""

    def __init__(self, model: WorldModel, teacher: WorldModel, config: RecoveryConfig):
        super().__init__(model, teacher)
        self.config = config

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # frames (B, T, C, H, W) in [-1, 1]; actions (B, T) or (B, T, A)
        model = self.model
        with torch.no_grad():
            clean = model.tokenizer.encode(batch["frames"])  # (B, T', c, h, w)
        condition = model.action_condition(batch["actions"], clean.shape[1])
        config = model.objective_cfg
        inputs = training_inputs(model, clean, condition, config)  # the same inputs as pretraining
        noised = inputs.batch
        # compared where pretraining compared them (objective.loss): clean frames or velocities
        convert = to_x0 if config.loss == "x0" else to_velocity
        truth = clean if config.loss == "x0" else noised.target

        def prediction(network: WorldModel) -> torch.Tensor:
            output = network_output(network, inputs)
            return convert(output, noised.noisy, noised.levels, config, anchor=inputs.anchor).float()

        student = prediction(model)
        with torch.no_grad():
            teacher = prediction(self.teacher)
        task, _ = weighted_frame_mse(student - truth.float(), noised.weight)
        distill, _ = weighted_frame_mse(student - teacher, noised.weight)
        loss = self.config.task_weight * task + self.config.distill_weight * distill
        return loss, {"loss": loss.detach(), "task_loss": task.detach(), "distill_loss": distill.detach()}


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
    return train_student(
        "prune_recovery",
        RecoveryObjective(pruned, teacher, recovery),
        pruned,
        "model.",
        config,
        dataset,
        steps=recovery.steps,
        lr=recovery.lr,
        seed=config.project.seed,
        checkpoint_dir=checkpoint_dir,
        track=track,
    )
