"""`manifest.json`: what a dataset folder holds, and the check that its shards still match it.

The manifest is written last by the builder, so a folder with a manifest is a finished dataset.
It holds no wall-clock time: the same config and seed give a byte-identical folder and therefore
the same DVC hash (`created` is filled only from `SOURCE_DATE_EPOCH`, the reproducible-builds
convention); when a dataset was made is recorded by DVC and MLflow, which cite it by that hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer

from worldforge.data.episode import ActionSpace, DatasetError

MANIFEST = "manifest.json"
FORMAT = 1


class ShardRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # file name inside the dataset folder, e.g. train-000000.tar
    split: str
    samples: int
    bytes: int
    sha256: str


class SplitRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episodes: int
    samples: int
    frames: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    tool: str
    created: str | None = None
    source: str
    config: dict[str, Any]  # the data config that determines the content (not loader settings)
    source_info: dict[str, Any]  # e.g. the simulator's state layout, the Atari game id
    frame_shape: tuple[int, int, int]  # (H, W, 3)
    window_frames: int
    fps: float
    action_space: ActionSpace
    splits: dict[str, SplitRecord]
    shards: list[ShardRecord]
    skipped: list[str] = []  # source problems: episodes or files left out, with the reason

    @field_serializer("action_space")
    def _compact(self, space: ActionSpace) -> dict:
        return space.model_dump(exclude_none=True)

    def shards_of(self, split: str) -> list[ShardRecord]:
        if split not in self.splits:
            raise DatasetError(f"split {split!r} is not in this dataset; it has {', '.join(self.splits) or 'no splits'}")
        return [s for s in self.shards if s.split == split]

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        path.write_text(text)
        return path


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a dataset folder; DatasetError names the file and field when it is unusable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path}: no manifest; {folder} is not a finished worldforge dataset "
                           "(build one with `worldforge data build`)")
    try:
        tree = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if isinstance(tree, dict) and "action_space" in tree:
        ActionSpace.parse(tree["action_space"], f"{path}: action_space")
    try:
        manifest = Manifest.model_validate(tree)
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise DatasetError(f"{path}: invalid manifest ({fields})") from None
    if manifest.format != FORMAT:
        raise DatasetError(f"{path}: format {manifest.format}, this worldforge reads format {FORMAT}")
    return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
