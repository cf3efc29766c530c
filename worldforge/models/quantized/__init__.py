"""Quantized models at load time: what a quantized package records (`QuantizationRecord`, the
`quantization` section of its config.json) and how it comes back to life (`restore_quantization`).

A quantized package is its parent's config and *unquantized* weights plus that section and, for
modelopt, two extras (modelopt_fp8.py). Restoring re-inserts the calibrated quantizers (modelopt) or
re-quantizes the listed layers (torchao; deterministic) for the device at hand; where the hardware
cannot run the recorded recipe as FP8 it runs the closest thing that it can and says so with a
`QuantizationFallbackWarning` (execution.py). Making a quantized package is a compression stage
(`worldforge.compression.quantize.stage`); loading one never imports it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from torch import nn

from worldforge.core.schema import Section, describe_errors
from worldforge.errors import WorldforgeError
from worldforge.models.quantized import modelopt_fp8, torchao_fp8
from worldforge.models.quantized.execution import plan_execution

SECTION = "quantization"


class QuantizedPackageError(WorldforgeError, ValueError):
    """A quantized package whose record or extra files cannot be restored; names the file."""


class QuantizationFallbackWarning(UserWarning):
    """The hardware cannot run a package's FP8 recipe as recorded; the message says what runs instead."""


class QuantizationRecord(Section):
    """config.json["quantization"] of a quantized package."""

    backend: Literal["modelopt", "torchao"]
    recipe: Literal["fp8_static", "fp8_dynamic", "fp8_weight_only"]
    granularity: Literal["per_row", "per_tensor"]
    format: Literal["float8_e4m3fn"] = "float8_e4m3fn"
    exclude: list[str]
    layers: list[str] = Field(description="the quantized layers")
    excluded_layers: list[str] = Field(
        default_factory=list, description="kept in high precision: matched by `exclude`, or not FP8-shaped"
    )
    calibration: dict[str, Any] | None = None
    compile: bool = False
    quantized_on: str = ""
    versions: dict[str, str] = Field(default_factory=dict)


def restore_quantization(model: nn.Module, config: dict[str, Any], folder: Path) -> nn.Module:
    """Re-apply the quantization that package `config` (config.json, in `folder`) records to `model`,
    built from that config and its weights and already on its device, in its dtype (cast to
    bfloat16 first for torchao per-row FP8).

    Warns with a QuantizationFallbackWarning when the hardware runs something other than the
    record; raises QuantizedPackageError naming config.json or the extra file at fault."""
    record = read_record(config, folder)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    execution = plan_execution(record.backend, record.recipe, record.granularity, device, dtype)
    if execution.fallback:
        warnings.warn(f"{folder}: {execution.fallback}", QuantizationFallbackWarning, stacklevel=3)
    if record.backend == "torchao":
        compile_layers = record.compile and device.type == "cuda"
        recipe, granularity = execution.recipe, execution.granularity
        return torchao_fp8.quantize(model, record.layers, recipe, granularity, compile_layers)
    state, tensors = _extra(folder, modelopt_fp8.STATE_FILE), _extra(folder, modelopt_fp8.TENSORS_FILE)
    try:
        model = modelopt_fp8.restore(model, state, tensors)
    except modelopt_fp8.ModeloptStateError as error:
        raise QuantizedPackageError(str(error)) from None
    if execution.fp8_matmuls:
        try:
            modelopt_fp8.enable_fp8_matmuls(model)
        except (RuntimeError, AssertionError, ValueError, TypeError) as error:  # an accelerator only
            reason = f"{type(error).__name__}: {error}"
            message = f"{folder}: enabling modelopt's FP8 matmuls failed ({reason}); FP8 is simulated"
            warnings.warn(message, QuantizationFallbackWarning, stacklevel=3)
    return model


def read_record(config: dict[str, Any], folder: Path) -> QuantizationRecord:
    """The validated `quantization` section of package `config` (config.json in `folder`)."""
    if SECTION not in config:
        raise QuantizedPackageError(f"{folder}/config.json: no {SECTION!r} section; the model is not quantized")
    try:
        return QuantizationRecord.model_validate(config[SECTION])
    except ValidationError as error:
        raise QuantizedPackageError(describe_errors(error, f"{folder}/config.json field {SECTION!r}")) from None


def _extra(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.exists():
        raise QuantizedPackageError(f"{folder}: extra file {name!r} listed in config.json is missing")
    return path
