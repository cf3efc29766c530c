"""What an FP8 recipe turns into on the hardware at hand.

Real FP8 matmuls (`torch._scaled_mm`) need CUDA compute capability >= 8.9 (Ada, Hopper and
later). Elsewhere a package still loads and runs, as the closest thing the hardware can do:

    modelopt fp8_static    simulated: E4M3 rounding with the calibrated scales, matmuls in the
                           model's dtype (same numbers as real FP8 up to accumulation rounding)
    torchao fp8_dynamic    fp8_weight_only: FP8 weights dequantized per matmul, activations as is
    torchao per_row        needs a bfloat16 model (row-wise `_scaled_mm` writes bfloat16 only);
                           per_tensor otherwise

`plan_execution` says which, and `Execution.fallback` explains it in words for the warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Execution:
    """How a recipe runs: the recipe and scale granularity actually used, whether the matmuls are
    real FP8, and why it differs from what was recorded (None when it does not)."""

    recipe: str
    granularity: str
    fp8_matmuls: bool
    fallback: str | None = None


def fp8_support(device: torch.device | str) -> tuple[bool, str]:
    """(whether `device` has FP8 matmuls, a description of it for messages)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"{device.type} (no FP8 matmul support)"
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    return (major, minor) >= (8, 9), f"{name} (compute capability {major}.{minor})"


def resolve_recipe(backend: str, recipe: str, device: torch.device) -> str:
    """`auto` -> the recipe `backend` runs best on `device`; any other recipe as given."""
    if recipe != "auto":
        return recipe
    if backend == "modelopt":
        return "fp8_static"
    return "fp8_dynamic" if fp8_support(device)[0] else "fp8_weight_only"


def plan_execution(
    backend: str, recipe: str, granularity: str, device: torch.device, dtype: torch.dtype
) -> Execution:
    """How `backend`'s `recipe` runs on `device` for a model in `dtype` (see the module docstring)."""
    supported, hardware = fp8_support(device)
    if backend == "modelopt":
        if supported:
            return Execution(recipe, "per_tensor", fp8_matmuls=True)
        return Execution(recipe, "per_tensor", fp8_matmuls=False, fallback=(
            f"FP8 is simulated on {hardware}: weights and activations are rounded to E4M3 with the "
            f"calibrated scales and the matmuls run in {dtype} (real FP8 matmuls need CUDA compute "
            "capability >= 8.9). Outputs match real FP8 up to accumulation rounding; it runs slower than "
            "the unquantized model, not faster."
        ))
    if recipe == "fp8_weight_only":
        return Execution(recipe, granularity, fp8_matmuls=False)
    if not supported:
        return Execution("fp8_weight_only", granularity, fp8_matmuls=False, fallback=(
            f"recipe fp8_dynamic needs FP8 matmuls (CUDA compute capability >= 8.9); this is {hardware}. "
            f"Running fp8_weight_only instead: weights are stored in FP8 ({granularity} scales) and "
            f"dequantized for each matmul in {dtype}; activations are not quantized. Outputs differ slightly "
            "from the fp8_dynamic model; weight memory is halved, the matmuls are not faster."
        ))
    if granularity == "per_row" and dtype != torch.bfloat16:
        return Execution(recipe, "per_tensor", fp8_matmuls=True, fallback=(
            f"per-row FP8 matmuls (torch._scaled_mm with row-wise scales) write bfloat16 only and this model "
            f"runs in {dtype}: using per-tensor scales instead. Cast the model to bfloat16 before "
            "restore_quantization to run per-row."
        ))
    return Execution(recipe, granularity, fp8_matmuls=True)
