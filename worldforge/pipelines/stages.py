"""Stage identity: what a stage's result depends on, and where that result lives.

A stage's key is a hash of everything its output depends on: the stage name, the config sections
it reads, and the identity of its inputs (dataset md5, parent package md5). Outputs live at paths
derived from that key, so a rerun with the same inputs finds the finished output, and a changed
config gives a new key and a new folder without touching the old one. Prefect's task cache is keyed
on the same value (see `tasks.py`); this module is plain Python so it is testable without Prefect.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import worldforge
from worldforge.config import WorldforgeConfig
from worldforge.core.project import Project
from worldforge.data.shards import content_config
from worldforge.packages import CONFIG_FILE, WEIGHTS_FILE

# The config sections each stage reads; a change anywhere else does not rerun it. The dataset is
# keyed on the part of `data` that decides the shards' bytes, so loader settings do not rebuild it.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "pretrain_tokenizer": ("data", "tokenizer", "train"),
    "pretrain_world": ("data", "model", "objective", "sampler", "train"),
    "evaluate": ("eval",),
    "distill": ("data", "distill", "train"),
    "prune": ("data", "prune", "train"),
    "quantize": ("data", "quantize"),
}


def stage_key(stage: str, config: WorldforgeConfig, inputs: dict[str, str] | None = None) -> str:
    """A 16-hex-digit key of (stage, worldforge version, seed, the stage's config sections, inputs).
    The dataset's leaves out `project.seed`: its episodes follow `data.seed`, part of its content."""
    dumped = config.model_dump(mode="json")
    payload = {
        "stage": stage,
        "version": worldforge.__version__,
        "seed": None if stage == "build_dataset" else dumped["project"]["seed"],
        "sections": {name: dumped[name] for name in STAGE_SECTIONS.get(stage, ())},
        "data": content_config(config.data) if stage == "build_dataset" else None,
        "inputs": dict(sorted((inputs or {}).items())),
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def dataset_dir(project: Project, config: WorldforgeConfig, key: str) -> Path:
    return project.datasets / f"{config.project.name}-{key}"


def package_dir(project: Project, config: WorldforgeConfig, stage: str, key: str) -> Path:
    return project.packages / f"{config.project.family}-{stage}-{key}"


def dataset_complete(path: Path) -> bool:
    """A dataset is finished once its manifest exists (the builder writes it last)."""
    return (path / "manifest.json").is_file()


def package_complete(path: Path) -> bool:
    """Packages are written atomically, so config + weights present means finished."""
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def describe(stage: str, key: str, inputs: dict[str, Any]) -> str:
    shown = ", ".join(f"{name}={str(value)[:12]}" for name, value in sorted(inputs.items()))
    return f"{stage}[{key}]({shown})"
