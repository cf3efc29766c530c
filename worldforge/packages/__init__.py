"""Model packages: the folder every stage consumes and produces.

    config.json        {"kind": "world_model", "tokenizer": {...}, "model": {...}, "sampler": {...}, ...}
    model.safetensors  the weights (never pickles)
    lineage.json       parent package / model version, dataset md5, stage, git sha, MLflow run id
    metrics.json       the latest evaluation
    <extras>           stage-specific files (e.g. quantization state), listed in config.json "extras"

`load_package` takes a folder (a registry URI is resolved to one by `worldforge.registry.resolve`),
validates the config by building the model on the meta device and checks every tensor's name,
shape and dtype against it before any weights are used. This module is the file format: it knows
models (to build them) and nothing above them (no registry, no compression stage).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from worldforge.core.schema import describe_errors
from worldforge.errors import WorldforgeError
from worldforge.models.quantized import QuantizedPackageError, restore_quantization
from worldforge.models.world_model import build_world_model
from worldforge.packages.lineage import Lineage

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LINEAGE_FILE = "lineage.json"
METRICS_FILE = "metrics.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


class PackageError(WorldforgeError, ValueError):
    """A model package that cannot be loaded; the message names the file and the field."""


BUILDERS = {"world_model": build_world_model}  # kind -> function(config dict) -> nn.Module


@dataclass
class ModelPackage:
    path: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    lineage: Lineage | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config["kind"]

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Instantiate the model from `config.json` and load the (already validated) weights.
        A quantized package (config.json "quantization") comes back quantized for `device`."""
        model = BUILDERS[self.kind](self.config)
        model.load_state_dict(self.state, strict=True)
        model = model.to(device).eval()
        if "quantization" in self.config:
            try:
                model = restore_quantization(model, self.config, self.path)
            except QuantizedPackageError as error:
                raise PackageError(str(error)) from None
        return model

    def extra(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise PackageError(f"{self.path}: extra file {name!r} listed in {CONFIG_FILE} is missing")
        return path


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; tied weights are stored once per name (safetensors refuses shared storage)."""
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}


def save_package(
    path: str | Path,
    config: dict[str, Any],
    state: dict[str, torch.Tensor] | torch.nn.Module,
    lineage: Lineage | dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extras: dict[str, str | Path] | None = None,
) -> Path:
    """Write a package atomically: into a sibling temp folder, then renamed into place.

    A failure midway leaves any previous package at `path` untouched. `lineage` as a dict is read
    as lineage.json would be (`Lineage.read`)."""
    path = Path(path)
    if "kind" not in config:
        raise PackageError(f"{path}: config has no 'kind' (expected one of {sorted(BUILDERS)})")
    if isinstance(state, torch.nn.Module):
        state = state_dict_for_save(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        config = dict(config)
        config["extras"] = sorted(extras or {})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file({k: v.contiguous() for k, v in state.items()}, str(staging / WEIGHTS_FILE))
        record = lineage if isinstance(lineage, Lineage) or lineage is None else Lineage.read(lineage)
        written = record.model_dump(mode="json") if record is not None else {}
        (staging / LINEAGE_FILE).write_text(json.dumps(written, indent=2, sort_keys=True, default=str))
        (staging / METRICS_FILE).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))
        for name, source in (extras or {}).items():
            target = staging / name
            if Path(source).is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        if path.exists():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            path.rename(backup)
            staging.rename(path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Replace a package's `metrics.json` (the latest evaluation)."""
    target = Path(path) / METRICS_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    tmp.replace(target)


def _read_json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise PackageError(f"{path}: missing (a model package needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PackageError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise PackageError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _expected_tensors(config: dict[str, Any], source: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    kind = config.get("kind")
    builders = BUILDERS
    if kind not in builders:
        raise PackageError(f"{source}: field 'kind' is {kind!r}, expected one of {sorted(builders)}")
    try:
        with torch.device("meta"):
            model = builders[kind](config)
    except (ValueError, TypeError, KeyError) as error:
        raise PackageError(f"{source}: config does not describe a valid {kind}: {error}") from None
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def validate_state(
    state: dict[str, torch.Tensor], expected: dict[str, tuple[tuple[int, ...], torch.dtype]], source: Path
) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    for name in sorted(set(expected) & set(state)):
        shape, dtype = expected[name]
        if tuple(state[name].shape) != shape:
            problems.append(f"{name}: shape {tuple(state[name].shape)} but config.json implies {shape}")
        elif state[name].dtype != dtype and state[name].dtype.is_floating_point != dtype.is_floating_point:
            problems.append(f"{name}: dtype {state[name].dtype}, expected {dtype}")
    if problems:
        raise PackageError(f"{source}: weights do not match config.json:\n  " + "\n  ".join(problems))


def load_package(source: str | Path) -> ModelPackage:
    """Load a package folder, validated (for a `models:/` URI: `load_package(registry.resolve(uri))`).

    Raises PackageError naming the file at fault: missing files, pickled weights, a truncated
    or corrupt safetensors file, tensors whose names or shapes disagree with config.json."""
    if str(source).startswith("models:/"):
        raise PackageError(f"{source}: a registry URI; resolve it to a folder first (worldforge.registry.resolve)")
    path = Path(source)
    if not path.is_dir():
        raise PackageError(f"{path}: not a model package folder (expected {CONFIG_FILE} + {WEIGHTS_FILE})")
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise PackageError(
            f"{path}: refusing pickled weights {pickles}; worldforge packages hold weights only in {WEIGHTS_FILE}"
        )
    config = _read_json(path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise PackageError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise PackageError(f"{weights}: unreadable safetensors file (truncated or corrupt?): {error}") from None
    validate_state(state, _expected_tensors(config, path / CONFIG_FILE), weights)
    return ModelPackage(
        path=path,
        config=config,
        state=state,
        lineage=read_lineage(path),
        metrics=_read_json(path / METRICS_FILE, required=False),
    )


def read_lineage(folder: str | Path) -> Lineage | None:
    """The lineage.json of a package folder (None without one), without reading its weights."""
    path = Path(folder) / LINEAGE_FILE
    try:
        return Lineage.read(_read_json(path, required=False))
    except ValidationError as error:
        raise PackageError(describe_errors(error, str(path))) from None


def package_md5(path: str | Path) -> str:
    """A hash of what the model is (config, weights, extras), stable across copies.

    `metrics.json` and `lineage.json` are left out: evaluating or re-registering a package does
    not make it another model."""
    digest = hashlib.md5()
    root = Path(path)
    skip = {METRICS_FILE, LINEAGE_FILE}
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip):
        digest.update(str(file.relative_to(root)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
