"""FP8 post-training quantization: `quantize_package` (package in, package out) and
`restore_quantization` (how a quantized package comes back to life on load).

A quantized package is its parent's config and *unquantized* weights (so `load_package` validates
it like any other) plus a `quantization` section in config.json and, for modelopt, two extras:

    "quantization": {"backend": "modelopt", "recipe": "fp8_static", "granularity": "per_tensor",
                     "format": "float8_e4m3fn", "exclude": [...patterns...],
                     "layers": [...quantized...], "excluded_layers": [...kept in high precision...],
                     "calibration": {"clips": 32, "rollouts": 8, "split": "train", "steps": 16},
                     "compile": false, "quantized_on": "...", "versions": {...}}
    modelopt_state.json, modelopt_quantizers.safetensors     (modelopt only; see fp8_modelopt.py)

`ModelPackage.build` calls `restore_quantization`: it re-inserts the calibrated quantizers
(modelopt) or re-quantizes the listed layers (torchao; deterministic) for the device at hand, and
where the hardware cannot run the recorded recipe as FP8 it runs the closest thing that it can and
says so with a `QuantizationFallbackWarning` (see fp8_execution.py).
"""

from __future__ import annotations

import contextlib
import fnmatch
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError
from torch import nn

from worldforge.compression import fp8_modelopt, fp8_torchao
from worldforge.compression.config import DEFAULT_EXCLUDE, QuantizeConfig, QuantizeError
from worldforge.compression.fp8_calibration import Batch, calibration_batches, calibration_loop, check_dataset
from worldforge.compression.fp8_execution import fp8_support, plan_execution, resolve_recipe
from worldforge.models.world_model import WorldModel
from worldforge.platform.config import WorldforgeConfig, describe_errors
from worldforge.platform.lineage import tracked_md5, version_package
from worldforge.platform.packages import ModelPackage, PackageError, load_package, package_md5, save_package
from worldforge.platform.schema import Section

SECTION = "quantization"
LAYER_TYPES = {"modelopt": (nn.Linear, nn.Conv3d), "torchao": (nn.Linear,)}


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


def excluded(name: str, patterns: list[str]) -> bool:
    """Whether module `name` or a module containing it matches one of the glob `patterns`."""
    parts = name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes for pattern in patterns)


def fp8_shaped(module: nn.Module) -> bool:
    """FP8 matmuls (`torch._scaled_mm`) need both dimensions of a linear divisible by 16; a pruned
    width may not be."""
    if not isinstance(module, nn.Linear):
        return True
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def select_layers(model: nn.Module, exclude: list[str], backend: str) -> tuple[list[str], list[str]]:
    """(layers to quantize, layers kept in high precision) among those `backend` can quantize, by
    module name: kept are those `exclude` matches and linears with a dimension not divisible by 16.
    Warns about a pattern of the user's that matches no layer (a typo?)."""
    modules = {name: m for name, m in model.named_modules() if isinstance(m, LAYER_TYPES[backend])}
    candidates = list(modules)
    kept = [name for name in candidates if excluded(name, exclude) or not fp8_shaped(modules[name])]
    mine = [p for p in exclude if p not in DEFAULT_EXCLUDE]
    unused = [p for p in mine if not any(excluded(name, [p]) for name in candidates)]
    if unused:
        warnings.warn(f"quantize.exclude: {unused} match no {backend}-quantizable layer", stacklevel=3)
    return [name for name in candidates if name not in kept], kept


def quantize_model(
    model: WorldModel, qcfg: QuantizeConfig, batches: list[Batch] | None = None, seed: int = 0
) -> tuple[WorldModel, QuantizationRecord]:
    """Quantize `model` in place as `qcfg` says; modelopt calibrates on `batches` (from
    `calibration_batches`). Returns the model and the record its package carries."""
    parameter = next(model.parameters())
    recipe = resolve_recipe(qcfg.backend, qcfg.recipe, parameter.device)
    layers, kept = select_layers(model, qcfg.exclude, qcfg.backend)
    if not layers:
        raise QuantizeError(f"quantize.exclude {qcfg.exclude} leaves no {qcfg.backend}-quantizable layer")
    record = QuantizationRecord(
        backend=qcfg.backend,
        recipe=recipe,
        granularity="per_tensor" if qcfg.backend == "modelopt" else qcfg.granularity,
        exclude=list(qcfg.exclude),
        layers=layers,
        excluded_layers=kept,
        compile=qcfg.compile and qcfg.backend == "torchao",
        quantized_on=fp8_support(parameter.device)[1],
        versions=_versions(qcfg.backend),
    )
    if qcfg.backend == "modelopt":
        if not batches:
            raise QuantizeError("modelopt FP8 calibrates activation scales: pass calibration batches")
        seen: list[int] = []
        steps = qcfg.calibration_steps or model.sampler_cfg.steps
        fp8_modelopt.quantize(model, layers, calibration_loop(batches, steps, seed, seen))
        record.calibration = {
            "clips": sum(seen), "rollouts": len(seen), "split": qcfg.calibration_split, "steps": steps
        }
        return model, record
    execution = plan_execution(qcfg.backend, recipe, record.granularity, parameter.device, parameter.dtype)
    if execution.fallback:
        message = f"the package records {recipe}; here: {execution.fallback}"
        warnings.warn(message, QuantizationFallbackWarning, stacklevel=2)
    fp8_torchao.quantize(model, layers, execution.recipe, execution.granularity, compile_layers=False)
    return model, record


def restore_quantization(model: WorldModel, package: ModelPackage) -> WorldModel:
    """Re-apply `package`'s quantization to `model`, built from the package's config and weights
    and already on its device, in its dtype (cast to bfloat16 first for torchao per-row FP8).

    Warns with a QuantizationFallbackWarning when the hardware runs something other than the
    record; raises PackageError naming config.json or the extra file at fault."""
    record = read_record(package)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    execution = plan_execution(record.backend, record.recipe, record.granularity, device, dtype)
    if execution.fallback:
        warnings.warn(f"{package.path}: {execution.fallback}", QuantizationFallbackWarning, stacklevel=3)
    if record.backend == "torchao":
        compile_layers = record.compile and device.type == "cuda"
        recipe, granularity = execution.recipe, execution.granularity
        return fp8_torchao.quantize(model, record.layers, recipe, granularity, compile_layers)
    state, tensors = package.extra(fp8_modelopt.STATE_FILE), package.extra(fp8_modelopt.TENSORS_FILE)
    try:
        model = fp8_modelopt.restore(model, state, tensors)
    except fp8_modelopt.ModeloptStateError as error:
        raise PackageError(str(error)) from None
    if execution.fp8_matmuls:
        try:
            fp8_modelopt.enable_fp8_matmuls(model)
        except (RuntimeError, AssertionError, ValueError, TypeError) as error:  # an accelerator only
            reason = f"{type(error).__name__}: {error}"
            message = f"{package.path}: enabling modelopt's FP8 matmuls failed ({reason}); FP8 is simulated"
            warnings.warn(message, QuantizationFallbackWarning, stacklevel=3)
    return model


def read_record(package: ModelPackage) -> QuantizationRecord:
    """The validated `quantization` section of a package's config.json; raises PackageError."""
    if SECTION not in package.config:
        raise PackageError(f"{package.path}/config.json: no {SECTION!r} section; the model is not quantized")
    try:
        return QuantizationRecord.model_validate(package.config[SECTION])
    except ValidationError as error:
        raise PackageError(describe_errors(error, f"{package.path}/config.json field {SECTION!r}")) from None


def quantize_package(
    source: str | Path,
    config: WorldforgeConfig,
    qcfg: QuantizeConfig,
    dataset_path: str | Path,
    out: str | Path,
    track: bool = True,
) -> Path:
    """Quantize the package at `source` (folder or `models:/` URI) to FP8 and write it to `out`.

    config: the root config (`data` shapes the calibration clips, `project` gives the seed and the
    MLflow experiment). qcfg: the `quantize` section. dataset_path: the dataset whose split
    `qcfg.calibration_split` calibrates modelopt's activation scales. track: record an MLflow
    stage run `quantize` (nested under the active run) with the package as an artifact.
    lineage.json names the parent package and its md5, the dataset and its DVC md5, the git sha
    and the run. Returns `out`. Raises QuantizeError / PackageError / DatasetError naming the file
    and field at fault."""
    from worldforge.platform.runtime import select_device
    from worldforge.platform.tracking import git_sha

    package = load_package(source)
    if SECTION in package.config:
        done = package.config[SECTION]
        raise QuantizeError(
            f"{package.path}/config.json: already quantized ({done.get('backend')} {done.get('recipe')}); "
            "quantize its unquantized parent instead"
        )
    model = package.build(select_device(qcfg.device))
    dataset = Path(dataset_path)
    check_dataset(model, dataset, package.path)
    lineage: dict[str, Any] = {
        "stage": "quantize",
        "parent": str(source),
        "parent_md5": package_md5(package.path),
        "dataset": str(dataset.resolve()),
        "dataset_md5": tracked_md5(dataset),
        "git_sha": git_sha(),
    }
    with _stage_run(track, config, qcfg, lineage) as run_id:
        lineage["mlflow_run_id"] = run_id
        start = time.perf_counter()
        batches = calibration_batches(dataset, config, qcfg) if qcfg.backend == "modelopt" else None
        model, record = quantize_model(model, qcfg, batches, seed=config.project.seed)
        metrics = {
            "quantize.layers": len(record.layers),
            "quantize.excluded_layers": len(record.excluded_layers),
            "quantize.calibration_clips": (record.calibration or {}).get("clips", 0),
            "quantize.seconds": time.perf_counter() - start,
        }
        package_config = {key: value for key, value in package.config.items() if key != "extras"}
        package_config[SECTION] = record.model_dump(mode="json")
        with tempfile.TemporaryDirectory() as scratch:
            extras = {}
            if qcfg.backend == "modelopt":
                extras = fp8_modelopt.save_state(model, set(package.state), Path(scratch))
            # the parent's weights, unquantized: the quantization is re-applied on load
            path = save_package(out, package_config, package.state, lineage, metrics, extras)
        if track:
            from worldforge.platform import tracking

            tracking.log_metrics(metrics)
            tracking.log_artifacts(path, "package")
            tracking.set_tags({"package.dvc_md5": version_package(path) or "untracked"})
    return path




def _versions(backend: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    with contextlib.suppress(PackageNotFoundError):
        versions[backend] = version({"modelopt": "nvidia-modelopt", "torchao": "torchao"}[backend])
    return versions


def _stage_run(
    track: bool, config: WorldforgeConfig, qcfg: QuantizeConfig, lineage: dict[str, Any]
) -> contextlib.AbstractContextManager[str | None]:
    """The MLflow stage run `quantize` (its id), or nothing (None) without tracking."""
    from worldforge.platform import tracking

    params = {f"quantize.{key}": value for key, value in qcfg.model_dump(mode="json").items()}
    tags = {"parent.model": lineage["parent"], "dataset.dvc_md5": lineage["dataset_md5"] or ""}
    return tracking.optional_stage_run(track, "quantize", config.project.experiment, params, tags)
