"""What every source produces: episodes of frames and actions, and the action space they live in.

Convention (shared with the models): action `t` is taken after frame `t` is seen, so frame `t + 1`
is the result of action `t`. The last action of an episode leads to a frame that was not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worldforge.errors import WorldforgeError


class DatasetError(WorldforgeError, ValueError):
    """A dataset, shard, sample or source file that cannot be used; the message names it."""


class ActionSpace(BaseModel):
    """`{"kind": "discrete", "n": 6}` (actions int64 in [0, n)) or `{"kind": "continuous", "dim": A}`
    (actions float32 vectors of size A). `names` optionally labels discrete actions."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["discrete", "continuous"]
    n: int | None = Field(None, ge=1)
    dim: int | None = Field(None, ge=1)
    names: list[str] | None = None

    @model_validator(mode="after")
    def _sized(self) -> ActionSpace:
        if self.kind == "discrete" and (self.n is None or self.dim is not None):
            raise ValueError("a discrete action space has `n` (number of actions) and no `dim`")
        if self.kind == "continuous" and (self.dim is None or self.n is not None):
            raise ValueError("a continuous action space has `dim` (vector size) and no `n`")
        if self.names is not None and (self.kind != "discrete" or len(self.names) != self.n):
            raise ValueError(f"`names` must label each of the n={self.n} discrete actions")
        return self

    @classmethod
    def parse(cls, value: Any, where: str) -> ActionSpace:
        """Validate an action space read from `where` (a file and field, for the error message)."""
        try:
            return cls.model_validate(value)
        except ValidationError as error:
            problems = "; ".join(e["msg"] for e in error.errors())
            raise DatasetError(
                f"{where}: unknown action space {value!r} ({problems}); expected "
                '{"kind": "discrete", "n": N} or {"kind": "continuous", "dim": A}'
            ) from None

    def check(self, actions: np.ndarray, where: str) -> np.ndarray:
        """Actions `(L,)` int64 (discrete) or `(L, A)` float32 (continuous), converted and range-checked."""
        if self.kind == "discrete":
            if actions.ndim != 1 or not (np.issubdtype(actions.dtype, np.integer) or _integral(actions)):
                raise DatasetError(f"{where}: discrete actions must be integers of shape (L,), got "
                                   f"{actions.dtype} {actions.shape}")
            actions = actions.astype(np.int64)
            if actions.size and (actions.min() < 0 or actions.max() >= self.n):
                raise DatasetError(f"{where}: discrete actions must be in [0, {self.n}), got "
                                   f"[{actions.min()}, {actions.max()}]")
            return actions
        if actions.ndim != 2 or actions.shape[1] != self.dim:
            raise DatasetError(f"{where}: continuous actions must have shape (L, {self.dim}), got {actions.shape}")
        return actions.astype(np.float32)

    def label(self, action: np.ndarray | int) -> str:
        """A short text for one action, for previews."""
        if self.kind == "discrete":
            index = int(action)
            return self.names[index] if self.names else str(index)
        return " ".join(f"{v:+.2f}" for v in np.asarray(action, dtype=np.float32).ravel()[:3])


def _integral(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating) and bool(np.all(np.mod(array, 1) == 0))


@dataclass
class Episode:
    """One run of a source. `frames` (L, H, W, 3) uint8; `actions` (L,) int64 or (L, A) float32;
    `state` (L, S) float32 ground truth or None; `reward` (L,) float32, the reward received on the
    way into each frame (0 for the first), or None; `info` one JSON-able dict per frame (the
    environment's `info` for that frame) or None; `meta` extra per-episode facts (e.g. colours)."""

    source: str
    episode: int
    frames: np.ndarray
    actions: np.ndarray
    fps: float
    action_space: ActionSpace
    state: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reward: np.ndarray | None = None
    info: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def windows(self, length: int) -> list[tuple[int, Episode]]:
        """Non-overlapping windows of `length` frames, as (start, episode-slice); a shorter
        remainder is dropped."""
        return [(start, self.slice(start, start + length)) for start in range(0, len(self) - length + 1, length)]

    def slice(self, start: int, stop: int) -> Episode:
        return Episode(
            source=self.source,
            episode=self.episode,
            frames=self.frames[start:stop],
            actions=self.actions[start:stop],
            fps=self.fps,
            action_space=self.action_space,
            state=None if self.state is None else self.state[start:stop],
            meta=self.meta,
            reward=None if self.reward is None else self.reward[start:stop],
            info=None if self.info is None else self.info[start:stop],
        )


def resize_frames(frames: np.ndarray, size: int, crop: bool) -> np.ndarray:
    """(L, h, w, 3) uint8 -> (L, size, size, 3) uint8, bilinear; `crop` takes the centre square
    first (keeps aspect), otherwise the frame is squashed."""
    from PIL import Image

    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if crop:
            h, w = frame.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            image = image.crop((left, top, left + side, top + side))
        out[i] = np.asarray(image.resize((size, size), Image.BILINEAR))
    return out
