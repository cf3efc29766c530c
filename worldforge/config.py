"""The resolved configuration: YAML presets + dotted overrides -> one typed `WorldforgeConfig`.

Every area owns the model of its section (`worldforge/data/config.py`, `worldforge/models/config.py`,
...); this module composes them, loads presets from `configs/`, applies `-o key.path=value`
overrides and turns validation failures into errors that name the file, the key and the expected
type. The resolved config (`config.flat()`) is what every stage logs as MLflow params.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from worldforge.compression.distill.config import DistillConfig
from worldforge.compression.prune.config import PruneConfig
from worldforge.compression.quantize.config import QuantizeConfig
from worldforge.core.schema import Section, describe_errors
from worldforge.data.config import DataConfig
from worldforge.errors import WorldforgeError
from worldforge.evaluation.config import EvalConfig
from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.pipelines.config import PipelineConfig
from worldforge.registry.config import RegistryConfig
from worldforge.training.config import TrainConfig


class ProjectConfig(Section):
    name: str = "worldforge"
    family: str = Field("worldforge-sim-tiny", description="registered model name in the MLflow registry")
    experiment: str = Field("worldforge", description="MLflow experiment of the pipeline runs")
    seed: int = 0


class WorldforgeConfig(Section):
    project: ProjectConfig = ProjectConfig()
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    sampler: SamplerConfig = SamplerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    pipeline: PipelineConfig = PipelineConfig()

    def flat(self) -> dict[str, Any]:
        """The config as `{"model.depth": 8, ...}`: what MLflow logs as params."""
        return flatten(self.model_dump(mode="json"))

    @model_validator(mode="after")
    def _guidance_has_an_unconditional_model(self) -> WorldforgeConfig:
        if self.sampler.action_guidance != 1 and not self.objective.action_dropout:
            raise ValueError(
                f"sampler.action_guidance={self.sampler.action_guidance} needs objective.action_dropout > 0: "
                "without it the model never learns a frame's 'no action' prediction to guide away from"
            )
        return self


class ConfigError(WorldforgeError, ValueError):
    """A config that cannot be used; the message names the file, the key and what was expected."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def preset_dirs() -> list[Path]:
    """Where preset names are looked up, first match wins: the project root's `configs/`, the
    current directory's `configs/`, then the `configs/` of the worldforge source checkout."""
    dirs = []
    if os.environ.get("WORLDFORGE_ROOT"):
        dirs.append(Path(os.environ["WORLDFORGE_ROOT"]) / "configs")
    dirs.append(Path.cwd() / "configs")
    dirs.append(Path(__file__).resolve().parents[1] / "configs")
    return dirs


def list_presets() -> list[str]:
    names = {p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def resolve_preset(preset: str | Path) -> Path:
    """A path to a YAML file, or a preset name (`quickstart`) found in `preset_dirs()`."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    for directory in preset_dirs():
        candidate = directory / f"{preset}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"unknown preset {preset!r}: no {preset}.yaml in {', '.join(str(d) for d in preset_dirs())}; "
        f"known presets: {', '.join(list_presets()) or 'none'}"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.depth=8` -> (["model", "depth"], 8); the value is parsed as YAML (`1e-4`, `true`, `[1,2]`)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE, e.g. -o train.lr=3e-4")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key component in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error})") from None
    if isinstance(value, str):
        value = _as_number(value)
    return key.split("."), value


def _as_number(text: str) -> Any:
    """YAML 1.1 reads `3e-4` as a string; people mean the number."""
    try:
        return float(text) if any(c in text for c in ".eE") else text
    except ValueError:
        return text


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return tree


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(tree).__name__}")
    return tree


def validate(tree: dict[str, Any], source: str) -> WorldforgeConfig:
    try:
        return WorldforgeConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(describe_errors(error, source)) from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`, section by section (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_preset(preset: str | Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], str]:
    """A preset's tree with its `base:` chain resolved (a preset may extend another by name or path)."""
    path = resolve_preset(preset).resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself ({' -> '.join(map(str, seen))})")
    tree = read_yaml(path)
    base = tree.pop("base", None)
    if base is None:
        return tree, str(path)
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a preset name or YAML path, got {base!r}")
    if not Path(base).is_absolute() and Path(base).suffix in (".yaml", ".yml"):
        base = str(path.parent / base)
    base_tree, base_source = read_preset(base, seen + (path,))
    return merge(base_tree, tree), f"{path} (base {base_source})"


def load_config(preset: str | Path | None = None, overrides: list[str] | None = None) -> WorldforgeConfig:
    """Load a preset name or YAML path (or the defaults when None) and apply dotted overrides.

    A preset may start with `base: OTHER` to extend another preset: its sections merge over it."""
    overrides = list(overrides or [])
    if preset is None:
        tree, source = {}, "defaults"
    else:
        tree, source = read_preset(preset)
    if overrides:
        source += " with overrides " + " ".join(overrides)
    return validate(apply_overrides(tree, overrides), source)


def config_from_dict(tree: dict[str, Any], source: str = "config") -> WorldforgeConfig:
    return validate(tree, source)


def dump_yaml(config: WorldforgeConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
