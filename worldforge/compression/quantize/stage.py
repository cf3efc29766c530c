"""FP8 post-training quantization, the compression stage: `quantize_package` (package in, package
out). What a quantized package records and how it is restored on load live in
`worldforge.models.quantized` (loading a package never imports this stage):

    "quantization": {"backend": "modelopt", "recipe": "fp8_static", "granularity": "per_tensor",
                     "format": "float8_e4m3fn", "exclude": [...patterns...],
                     "layers": [...quantized...], "excluded_layers": [...kept in high precision...],
                     "calibration": {"clips": 32, "rollouts": 8, "split": "train", "steps": 16},
                     "compile": false, "quantized_on": "...", "versions": {...}}
    modelopt_state.json, modelopt_quantizers.safetensors     (modelopt only; see models/quantized/modelopt_fp8.py)
"""

from __future__ import annotations

import contextlib
import fnmatch
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from worldforge.compression.quantize.calibration import (
    Batch,
    calibration_batches,
    calibration_loop,
    check_dataset,
)
from worldforge.compression.quantize.config import DEFAULT_EXCLUDE, QuantizeConfig, QuantizeError
from worldforge.compression.stage import open_parent, publish, stage_lineage, stage_run
from worldforge.config import WorldforgeConfig
from worldforge.core.runtime import select_device
from worldforge.models.quantized import (
    SECTION,
    QuantizationFallbackWarning,
    QuantizationRecord,
    modelopt_fp8,
    torchao_fp8,
)
from worldforge.models.quantized.execution import fp8_support, plan_execution, resolve_recipe
from worldforge.models.world_model import WorldModel
from worldforge.packages import save_package

STAGE = "quantize"
LAYER_TYPES = {"modelopt": (nn.Linear, nn.Conv3d), "torchao": (nn.Linear,)}


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
        modelopt_fp8.quantize(model, layers, calibration_loop(batches, steps, seed, seen))
        record.calibration = {
            "clips": sum(seen), "rollouts": len(seen), "split": qcfg.calibration_split, "steps": steps
        }
        return model, record
    execution = plan_execution(qcfg.backend, recipe, record.granularity, parameter.device, parameter.dtype)
    if execution.fallback:
        message = f"the package records {recipe}; here: {execution.fallback}"
        warnings.warn(message, QuantizationFallbackWarning, stacklevel=2)
    torchao_fp8.quantize(model, layers, execution.recipe, execution.granularity, compile_layers=False)
    return model, record


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
    parent = open_parent(source, config, track=track)
    package = parent.package
    if SECTION in package.config:
        done = package.config[SECTION]
        raise QuantizeError(
            f"{package.path}/config.json: already quantized ({done.get('backend')} {done.get('recipe')}); "
            "quantize its unquantized parent instead"
        )
    model = package.build(select_device(qcfg.device))
    dataset = Path(dataset_path)
    check_dataset(model, dataset, package.path)
    lineage = stage_lineage(STAGE, parent, dataset, {"backend": qcfg.backend})
    with stage_run(track, STAGE, config, qcfg, lineage):
        start = time.perf_counter()
        batches = calibration_batches(dataset, config, qcfg) if qcfg.backend == "modelopt" else None
        model, record = quantize_model(model, qcfg, batches, seed=config.project.seed)
        lineage.params.update({"recipe": record.recipe, "granularity": record.granularity, "layers": len(record.layers)})
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
                extras = modelopt_fp8.save_state(model, set(package.state), Path(scratch))
            # the parent's weights, unquantized: the quantization is re-applied on load
            path = save_package(out, package_config, package.state, lineage, metrics, extras)
        if track:
            publish(path, metrics)
    return path




def _versions(backend: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    with contextlib.suppress(PackageNotFoundError):
        versions[backend] = version({"modelopt": "nvidia-modelopt", "torchao": "torchao"}[backend])
    return versions
