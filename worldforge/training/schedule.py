"""Learning rate: linear warmup from lr / warmup on the first step to lr, then a half cosine down to
`min_ratio * lr` at the last step (and flat after it).

With `train.lr_schedule: budget` and a wall-clock budget (`train.max_minutes`), the cosine's
progress is the larger of the steps done and the budget spent, each as a share of its whole: a
machine that reaches only half the steps in the budget still ends at the floor, instead of stopping
at a mid-schedule learning rate on an unannealed model. The trainer sets `spent` once a step, from a
value all ranks agree on.

The scheduler is a `LambdaLR` over DeepSpeed's base optimizer, so DeepSpeed steps it at every
optimizer step and saves/restores it with its checkpoints (`spent` included, as LambdaLR keeps a
callable object's attributes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WarmupCosine:
    """step (0-based, optimizer steps already taken) -> lr multiplier in [min_ratio, 1]."""

    warmup: int
    total: int
    min_ratio: float
    spent: float = 0.0  # share of the wall-clock budget spent; stays 0 for a schedule in steps

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup + 1) / max(1, self.total - self.warmup)
        progress = min(1.0, max(progress, self.spent))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(steps: int, warmup: int, min_ratio: float) -> WarmupCosine:
    return WarmupCosine(max(1, min(warmup, steps)), steps, min_ratio)


def scheduler_factory(multiplier: WarmupCosine):
    """What `deepspeed.initialize(lr_scheduler=...)` calls with the base optimizer."""

    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)

    return make
