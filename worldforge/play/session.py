"""A person at the controls: a world model stepped one frame at a time from a held-out episode.

`Player.open(source, dataset)` loads a package (folder or `models:/` URI) and the first episodes
of the dataset's held-out split. `player.begin(episode, mode)` starts a `Run` from that episode's
first `context_frames` recorded frames; each `run.step(action)` generates the next frame with the
KV-cached rollout (`models.streaming.LatentStream`: one frame's tokens per step, memory bounded by
the model's context window however long a person plays). In "play" mode the action is the
person's; in "replay" mode it is the recorded one, and the recorded frame comes back beside the
generated one until the episode ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from worldforge.data.episode import ActionSpace, Episode
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_episodes
from worldforge.errors import WorldforgeError
from worldforge.evaluation.report import to_uint8
from worldforge.evaluation.rollout_eval import to_model_frames
from worldforge.models.streaming import LatentStream
from worldforge.models.world_model import WorldModel
from worldforge.packages import load_package
from worldforge.registry.query import resolve
from worldforge.training.tasks import check_dataset

Mode = Literal["play", "replay"]
MODES = ("play", "replay")


class PlayError(WorldforgeError, ValueError):
    """A request the session cannot serve: an unknown episode or mode, an action outside the space."""


@dataclass
class Step:
    """One generated frame and what made it."""

    index: int  # frames generated since the context, from 1
    frame: np.ndarray  # (H, W, 3) uint8
    action: int | list[float]  # the action that led to it
    label: str  # the action, as text
    seconds: float  # denoising + decoding this frame
    truth: np.ndarray | None = None  # replay: the recorded frame at the same step
    done: bool = False  # replay: the recorded episode has no further frame


class Run:
    """One rollout from an episode's context. Not thread-safe: one run per connection."""

    def __init__(self, player: Player, episode: Episode, mode: Mode, seed: int):
        self.player, self.episode, self.mode = player, episode, mode
        model = player.model
        self.r = model.frames_per_latent
        self.count = player.context_frames
        generator = torch.Generator().manual_seed(seed)
        frames = to_model_frames(episode.frames[: self.count])[None]  # (1, Tc, C, H, W)
        with torch.no_grad():
            context = model.tokenizer.encode(frames)  # (1, Tc', c, h, w)
        self.known = context.shape[1]
        # Recorded actions 0 .. Tc - 2 led to the context frames; the ones that follow are the person's.
        recorded = [self._tensor(a) for a in episode.actions[: self.count - 1]]
        condition = model.action_condition(self._batch(recorded), self.known)
        # Actions that led to the frames so far, as far back as `model.action_history` reads them.
        self.history = recorded[: (self.known - 1) * self.r][-model.model_cfg.action_history * self.r :]
        self.stream = LatentStream(model, context, condition, generator)
        self.latents = [context[:, -1:]]  # recent latent frames, in front of the new one when decoding
        self.generated = 0

    def _tensor(self, action) -> torch.Tensor:
        if self.player.action_space.kind == "discrete":
            return torch.tensor(int(action), dtype=torch.long)
        return torch.as_tensor(np.asarray(action, dtype=np.float32))

    def _batch(self, actions: list[torch.Tensor]) -> torch.Tensor:
        """A batch of one action sequence: (1, T) or (1, T, A)."""
        space = self.player.action_space
        if not actions:
            shape = (1, 0) if space.kind == "discrete" else (1, 0, space.dim)
            return torch.zeros(shape, dtype=torch.long if space.kind == "discrete" else torch.float32)
        return torch.stack(actions)[None]

    @property
    def context(self) -> np.ndarray:
        """The recorded context frames (Tc, H, W, 3) uint8."""
        return self.episode.frames[: self.count]

    @property
    def remaining(self) -> int:
        """Replay: recorded frames still ahead of the rollout."""
        return len(self.episode) - self.count - self.generated

    def step(self, action: Any = None) -> Step:
        """Generate the next frame. Play: `action` is an action index (discrete) or a vector
        (continuous); replay: the recorded action is taken and `action` is ignored."""
        if self.mode == "replay":
            if self.remaining < self.r:
                raise PlayError(f"episode {self.episode.episode} has no recorded frames left to replay")
            action = self.episode.actions[self.count - 1 + self.generated]
        else:
            action = self.player.check_action(action)
        start = time.perf_counter()
        model = self.player.model
        with torch.no_grad():
            # A latent frame's conditioning depends only on the r actions that lead to it and those
            # of the `model.action_history` - 1 latent frames before it, so only that much history is
            # kept however long a person plays: the last frame of a sequence led to by those actions
            # ("no action" where a rollout has fewer behind it, as when it is conditioned at once).
            lags = model.model_cfg.action_history
            self.history = (self.history + [self._tensor(action)] * self.r)[-lags * self.r :]
            condition = model.action_condition(self._batch(self.history), len(self.history) // self.r + 1)[:, -1:]
            latent = self.stream.next(condition)
            # The decoder is causal: decode behind the recent latent frames, keep the new frames.
            self.latents = (self.latents + [latent])[-model.model_cfg.context_window :]
            frames = model.tokenizer.decode(torch.cat(self.latents, dim=1))[0, -self.r :]
        pixels = to_uint8(frames)
        seconds = time.perf_counter() - start
        self.generated += self.r
        truth = None
        if self.mode == "replay":
            at = self.count + self.generated - 1
            truth = self.episode.frames[at]
        action = action.tolist() if isinstance(action, np.ndarray) else action
        action = int(action) if self.player.action_space.kind == "discrete" else [float(v) for v in action]
        return Step(
            index=self.generated,
            frame=pixels[-1],
            action=action,
            label=self.player.action_space.label(action if isinstance(action, int) else np.asarray(action)),
            seconds=seconds,
            truth=truth,
            done=self.mode == "replay" and self.remaining < self.r,
        )


class Player:
    """A model and the held-out episodes it starts from; `begin` a `Run` per person."""

    def __init__(
        self,
        model: WorldModel,
        episodes: list[Episode],
        action_space: ActionSpace,
        fps: float,
        name: str,
        context_frames: int,
    ):
        if not episodes:
            raise PlayError("no episodes to start from")
        self.model, self.episodes, self.action_space = model.eval(), episodes, action_space
        self.fps, self.name, self.context_frames = fps, name, context_frames
        actions = np.concatenate([e.actions for e in episodes])
        # Slider ranges of a continuous space: what the recorded episodes span.
        self.ranges = (
            None
            if action_space.kind == "discrete"
            else [[float(actions[:, i].min()), float(actions[:, i].max())] for i in range(action_space.dim)]
        )

    @classmethod
    def open(
        cls,
        source: str | Path,
        dataset: str | Path,
        split: str = "test",
        episodes: int = 8,
        context_frames: int = 4,
        name: str | None = None,
    ) -> Player:
        """Load `source` (a package folder or models:/ URI) and the first `episodes` episodes of
        `dataset`'s `split`. Errors name the package or dataset file at fault."""
        dataset = Path(dataset)
        manifest = read_manifest(dataset)
        package = load_package(resolve(source))
        if package.kind != "world_model":
            raise PlayError(f"{source}: a {package.kind!r} package; play needs a world model")
        model = package.build()
        check_dataset(model, dataset)  # frames and actions the model can take, naming both files' fields
        space = manifest.action_space
        chosen = []
        for episode in iter_episodes(dataset, split):
            if len(episode) > context_frames:
                chosen.append(episode)
            if len(chosen) == episodes:
                break
        if not chosen:
            raise PlayError(f"{dataset}: split {split!r} has no episode longer than {context_frames} frames")
        return cls(model, chosen, space, manifest.fps, name or str(source), context_frames)

    def check_action(self, action: Any) -> int | np.ndarray:
        space = self.action_space
        if space.kind == "discrete":
            if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < space.n:
                raise PlayError(f"action {action!r}: expected an integer in [0, {space.n})")
            return action
        vector = np.asarray(action, dtype=np.float32)
        if vector.shape != (space.dim,) or not np.isfinite(vector).all():
            raise PlayError(f"action {action!r}: expected {space.dim} finite numbers")
        return vector

    def begin(self, episode: int = 0, mode: str = "play", seed: int = 0) -> Run:
        if mode not in MODES:
            raise PlayError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        if not 0 <= episode < len(self.episodes):
            raise PlayError(f"episode {episode}: expected 0 .. {len(self.episodes) - 1}")
        return Run(self, self.episodes[episode], mode, seed)

    def info(self) -> dict[str, Any]:
        """What the page needs to draw its controls."""
        space = self.action_space
        return {
            "model": self.name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "sampling_steps": self.model.sampler_cfg.steps,
            "action_space": space.model_dump(exclude_none=True),
            "labels": [space.label(i) for i in range(space.n)] if space.kind == "discrete" else None,
            "ranges": self.ranges,
            "episodes": [e.episode for e in self.episodes],
            "fps": self.fps,
            "context_frames": self.context_frames,
            "frame_size": list(self.model.tokenizer_cfg.frame_size),
        }
