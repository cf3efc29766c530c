"""The modelopt backend: static FP8 (E4M3) for weights and activations, calibrated on rollouts.

`quantize` inserts modelopt's quantizers, enables exactly the weight and input quantizers of the
chosen layers (every other quantizer stays off) and calibrates per-tensor scales (`amax`) with a
forward loop. What makes a quantized model reloadable without recalibrating is modelopt's state
(`mto.modelopt_state`: which quantizer sits where, with which settings) plus the quantizers'
tensors (the amax values). modelopt saves both with `torch.save`; worldforge never loads pickles,
so the state goes to JSON (tuples and torch dtypes tagged, see `encode_state`) and the tensors to
safetensors, and `restore` hands them back to `mto.restore_from_modelopt_state`.

Fake quantization (round to E4M3 and back, matmul in high precision) runs on any device. On CUDA
with compute capability >= 8.9, `enable_fp8_matmuls` packs the weights into FP8 and routes the
quantized linears through modelopt's `torch._scaled_mm` kernel.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from worldforge.errors import WorldforgeError

log = logging.getLogger(__name__)

STATE_FILE = "modelopt_state.json"
TENSORS_FILE = "modelopt_quantizers.safetensors"
E4M3_PER_TENSOR = {"num_bits": (4, 3), "axis": None}
QUANTIZERS = ("weight_quantizer", "input_quantizer")


class ModeloptStateError(WorldforgeError, ValueError):
    """modelopt's state holds something that cannot be stored without pickle, or a stored state
    does not fit the model; the message names the file and the field."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """modelopt warns about things that do not concern worldforge (no `transformers` installed;
    parameter-free norms whose disabled quantizers it cannot place on a device) and prints
    "Inserted N quantizers" to stdout; the print goes to the debug log."""
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.filterwarnings("ignore", message="Cannot find transformers package")
        warnings.filterwarnings("ignore", message="Could not identify the device for TensorQuantizer")
        yield
    if printed.getvalue().strip():
        log.debug("modelopt: %s", printed.getvalue().strip())


def _mtq():
    with _quiet():
        import modelopt.torch.quantization as mtq
    return mtq


def quant_config(layers: list[str]) -> dict[str, Any]:
    """modelopt's config: every quantizer off, then weight + input quantizers on for `layers`."""
    entries: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    for name in layers:
        for quantizer in QUANTIZERS:
            entries.append({"quantizer_name": f"{name}.{quantizer}", "cfg": dict(E4M3_PER_TENSOR)})
    return {"quant_cfg": entries, "algorithm": "max"}


def quantize(model: nn.Module, layers: list[str], forward_loop: Callable[[nn.Module], None]) -> nn.Module:
    """Insert FP8 quantizers into `layers` of `model` (in place) and calibrate them with
    `forward_loop(model)`. Returns the model."""
    mtq = _mtq()
    with _quiet():
        return mtq.quantize(model, quant_config(layers), forward_loop)


def enabled_quantizers(model: nn.Module) -> list[str]:
    """Names of the quantizer modules that are on, e.g. `dit.blocks.0.mlp.fc1.input_quantizer`."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [name for name, m in model.named_modules() if isinstance(m, TensorQuantizer) and m.is_enabled]


def save_state(model: nn.Module, base_keys: set[str], folder: Path) -> dict[str, Path]:
    """Write modelopt's state (JSON) and the quantizer tensors (safetensors) of a quantized model
    into `folder`; `base_keys` are the names of the unquantized model's tensors, left out.
    Returns {file name: path}, the package extras."""
    import modelopt.torch.opt as mto

    state = encode_state(mto.modelopt_state(model))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in base_keys}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
    save_file(tensors, str(folder / TENSORS_FILE))
    return {STATE_FILE: folder / STATE_FILE, TENSORS_FILE: folder / TENSORS_FILE}


def restore(model: nn.Module, state_file: Path, tensors_file: Path) -> nn.Module:
    """Re-insert the quantizers recorded in `state_file` into `model` (built with the package's
    weights) and load their calibrated tensors from `tensors_file`; no calibration runs.
    Returns the model, on the device of its weights."""
    import modelopt.torch.opt as mto

    _mtq()  # registers modelopt's quantization modes
    try:
        state = decode_state(json.loads(state_file.read_text()))
    except json.JSONDecodeError as error:
        raise ModeloptStateError(f"{state_file}: not valid JSON ({error})") from None
    device, training = next(model.parameters()).device, model.training
    base_keys = set(model.state_dict())
    with _quiet():
        model = mto.restore_from_modelopt_state(model, state)
    expected = set(model.state_dict()) - base_keys
    tensors = load_file(str(tensors_file))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ModeloptStateError(
            f"{tensors_file}: does not match the quantizers of {state_file.name}: "
            f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}"
        )
    model.load_state_dict(tensors, strict=False)
    return model.to(device).train(training)  # the new quantizer modules start in training mode


def enable_fp8_matmuls(model: nn.Module) -> None:
    """Store the quantized linears' weights in FP8 and run them with FP8 matmuls (CUDA >= 8.9)."""
    _mtq().compress(model)


def encode_state(value: Any, path: str = "modelopt_state") -> Any:
    """modelopt's state -> plain JSON: tuples (and torch.Size) as {"__tuple__": [...]}, dtypes as
    {"__dtype__": "float32"}. Anything else that JSON cannot hold raises ModeloptStateError."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ModeloptStateError(f"{path}: key {key!r} is not a string; cannot store it as JSON")
        return {key: encode_state(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, tuple):  # torch.Size included
        return {"__tuple__": [encode_state(item, f"{path}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ModeloptStateError(
        f"{path}: a {type(value).__name__} ({value!r:.80}) in modelopt's state cannot be stored "
        "without pickle"
    )


def decode_state(value: Any) -> Any:
    """The inverse of `encode_state`."""
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(decode_state(item) for item in value["__tuple__"])
        if set(value) == {"__dtype__"}:
            dtype = getattr(torch, value["__dtype__"], None)
            if not isinstance(dtype, torch.dtype):
                raise ModeloptStateError(f"unknown torch dtype {value['__dtype__']!r} in modelopt state")
            return dtype
        return {key: decode_state(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_state(item) for item in value]
    return value
