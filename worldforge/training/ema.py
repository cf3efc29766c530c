"""Exponential moving average of the trainable weights, sharded across data-parallel ranks.

Each rank keeps fp32 averages of only its share of every trainable parameter, so the EMA costs
4 bytes / parameter / world_size whatever the ZeRO stage:
- under ZeRO-3 the share is the rank's own partition (`param.ds_tensor`), which is all it holds;
- otherwise (ZeRO 0-2, every rank holds the whole parameter) the share is the rank-th of
  `world_size` equal chunks of the flattened parameter.
`full()` gathers the shares into whole tensors (a collective: every rank must call it).

Decay is warmed up, `min(decay, (1 + n) / (10 + n))` after n updates, so that early averages are
not dominated by the random initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn


def _zero3(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_tensor")


class ShardedEMA:
    def __init__(self, module: nn.Module, decay: float, rank: int = 0, world_size: int = 1, comm_device=None):
        """module: the engine's module (after `deepspeed.initialize`, so ZeRO-3 partitions exist).
        comm_device: where shares travel for `full()` (the GPU under NCCL)."""
        self.decay = decay
        self.rank, self.world_size = rank, world_size
        self.comm_device = comm_device
        self.updates = 0
        self.params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.shadow = {name: self._local(p).detach().float().clone() for name, p in self.params.items()}

    def _chunk(self, param: torch.Tensor) -> int:
        return math.ceil(param.numel() / self.world_size)

    def _local(self, param: torch.Tensor) -> torch.Tensor:
        """This rank's share of `param`, flat (B,) with B equal on every rank."""
        if _zero3(param):
            return param.ds_tensor.view(-1)
        chunk = self._chunk(param)
        flat = param.data.view(-1)[self.rank * chunk : (self.rank + 1) * chunk]
        if flat.numel() < chunk:  # the last rank's share of a parameter that does not divide evenly
            flat = torch.cat([flat, flat.new_zeros(chunk - flat.numel())])
        return flat

    @property
    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the averages towards the current weights; call after every optimizer step."""
        weight = 1.0 - self.current_decay
        for name, param in self.params.items():
            self.shadow[name].lerp_(self._local(param).float(), weight)
        self.updates += 1

    @torch.no_grad()
    def full(self, name: str) -> torch.Tensor:
        """The whole averaged parameter `name`, fp32 on the CPU, on every rank (collective)."""
        param, shard = self.params[name], self.shadow[name]
        if self.world_size > 1:
            shard = shard.to(self.comm_device or shard.device)
            pieces = [torch.empty_like(shard) for _ in range(self.world_size)]
            dist.all_gather(pieces, shard)
            shard = torch.cat(pieces)
        shape = param.ds_shape if _zero3(param) else param.shape
        return shard[: math.prod(shape)].view(shape).cpu().clone()

    def state_dict(self) -> dict:
        """This rank's shares (each rank saves its own)."""
        return {
            "updates": self.updates,
            "decay": self.decay,
            "shadow": {k: v.cpu() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(
                f"EMA state does not match the model: differing parameters {sorted(missing)[:8]}"
            )
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
