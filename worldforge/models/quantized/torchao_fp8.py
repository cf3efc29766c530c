"""The torchao backend: FP8 (E4M3) linears by swapping their weights for `Float8Tensor`s.

fp8_dynamic: activations are scaled at run time (per row = per token, or per tensor) and the
matmul runs in FP8 (`torch._scaled_mm`); needs CUDA compute capability >= 8.9. fp8_weight_only:
weights are stored in FP8 and dequantized for each matmul; runs anywhere. Both are deterministic
functions of the weights, so a package stores its unquantized weights and the recipe, and
quantization is re-applied on load: nothing to calibrate, nothing extra to store.

torchao quantizes `nn.Linear` layers only; convolutions (a VAE tokenizer's) stay in high precision.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """On import torchao logs the optional kernels (mxfp8, cutlass) it cannot load; these recipes
    do not use them."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def torchao_config(recipe: str, granularity: str, tune_inductor: bool):
    """The torchao config of a recipe (`fp8_dynamic` | `fp8_weight_only`)."""
    with _quiet():
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            PerRow,
            PerTensor,
        )

    scale = PerRow() if granularity == "per_row" else PerTensor()
    if recipe == "fp8_dynamic":
        return Float8DynamicActivationFloat8WeightConfig(granularity=scale, set_inductor_config=tune_inductor)
    if recipe == "fp8_weight_only":
        return Float8WeightOnlyConfig(granularity=scale, set_inductor_config=tune_inductor)
    raise ValueError(f"unknown torchao recipe {recipe!r}")


def quantize(
    model: nn.Module, layers: list[str], recipe: str, granularity: str, compile_layers: bool
) -> nn.Module:
    """Quantize the `nn.Linear` layers named in `layers` in place; with `compile_layers`, compile
    each of them (dynamic shapes: the token count changes between prefill and generation)."""
    with _quiet():
        from torchao.quantization import quantize_

    chosen = set(layers)
    config = torchao_config(recipe, granularity, tune_inductor=compile_layers)
    quantize_(model, config, filter_fn=lambda module, name: name in chosen and isinstance(module, nn.Linear))
    if compile_layers:
        modules = dict(model.named_modules())
        for name in layers:
            modules[name].compile(dynamic=True)
    return model


def is_quantized(module: nn.Module) -> bool:
    """Whether a linear's weight is a torchao FP8 tensor."""
    with _quiet():
        from torchao.quantization import Float8Tensor

    return isinstance(getattr(module, "weight", None), Float8Tensor)

