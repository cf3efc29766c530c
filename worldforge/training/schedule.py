"""Learning rate: linear warmup from lr / warmup on the first step to lr, then a half cosine down to
`min_ratio * lr` at the last step (and flat after it).

The scheduler is a `LambdaLR` over DeepSpeed's base optimizer, so DeepSpeed steps it at every
optimizer step and saves/restores it with its checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """step (0-based, optimizer steps already taken) -> lr multiplier in [min_ratio, 1]."""

    warmup: int
    total: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup + 1) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduler_factory(steps: int, warmup: int, min_ratio: float):
    """What `deepspeed.initialize(lr_scheduler=...)` calls with the base optimizer."""
    multiplier = WarmupCosine(max(1, min(warmup, steps)), steps, min_ratio)

    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)

    return make
