"""Whole weights out of a DeepSpeed engine, whatever the ZeRO stage: for validation on one rank
and for the model package.

Every function here is a collective: all ranks call it, in the same order.
- trainable parameters: the fp32 master copy (`safe_get_full_fp32_param`: ZeRO 1-3 and the bf16
  optimizer keep one), else the parameter itself (ZeRO-0 in fp32); or their EMA;
- frozen parameters (a pretrained tokenizer): gathered with `GatheredParameters` (a no-op below
  ZeRO-3, where every rank holds them whole);
- buffers are never partitioned.
"""

from __future__ import annotations

import torch
from torch import nn

from worldforge.training.ema import ShardedEMA


@torch.no_grad()
def _whole_parameter(param: nn.Parameter) -> torch.Tensor:
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    if param.requires_grad:
        full = safe_get_full_fp32_param(param)
        if full is not None:
            return full.detach().float().cpu().clone()
    with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
        return param.detach().float().cpu().clone()


@torch.no_grad()
def consolidated_state(
    root: nn.Module, prefix: str = "", ema: ShardedEMA | None = None
) -> dict[str, torch.Tensor]:
    """The fp32 CPU state dict of `root`'s submodule at `prefix` (e.g. "model." -> the world model's
    keys without it), with EMA weights for trainable parameters when `ema` is given. Collective.

    Keys and dtypes follow `submodule.state_dict()`; floating tensors come out fp32."""
    submodule = root.get_submodule(prefix.rstrip(".")) if prefix else root
    names = {id(p): name for name, p in root.named_parameters()}  # the EMA is keyed by root names
    values: dict[int, torch.Tensor] = {}
    for _, param in submodule.named_parameters():  # every rank walks the same order
        if ema is not None and names[id(param)] in ema.params:
            values[id(param)] = ema.full(names[id(param)])
        else:
            values[id(param)] = _whole_parameter(param)
    state = {}
    for key, tensor in submodule.state_dict(keep_vars=True).items():
        if id(tensor) in values:
            state[key] = values[id(tensor)]
        else:  # a buffer
            state[key] = tensor.detach().cpu().clone()
        if state[key].is_floating_point():
            state[key] = state[key].float()
    return state
