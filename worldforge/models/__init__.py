"""The world model: tokenizer, world DiT, flow-matching objective, samplers, streaming rollout.

    from worldforge.models import WorldModel, flow_matching_loss, rollout

Submodules are imported lazily so that `import worldforge.models` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "WorldModel": "world_model",
    "build_world_model": "world_model",
    "package_config": "world_model",
    "flow_matching_loss": "objective",
    "tokenizer_loss": "tokenizer_objective",
    "reconstruction_psnr": "tokenizer_objective",
    "psnr": "tokenizer_objective",
    "rollout": "streaming",
    "RolloutResult": "streaming",
    "count_parameters": "flops",
    "flops_per_frame": "flops",
    "rollout_flops": "flops",
    "forward_flops": "flops",
}

__all__ = [
    "RolloutResult",
    "WorldModel",
    "build_world_model",
    "count_parameters",
    "flops_per_frame",
    "flow_matching_loss",
    "forward_flops",
    "package_config",
    "psnr",
    "reconstruction_psnr",
    "rollout",
    "rollout_flops",
    "tokenizer_loss",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worldforge.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"worldforge.models.{_EXPORTS[name]}"), name)
