"""Rollout quality on held-out episodes: clips from the dataset, the model's rollouts, the scores.

One clip per episode, from the episode's first frame: `context_frames` ground-truth frames go in,
the recorded actions drive `horizon` generated frames, which are compared with the recorded ones.
The copy-last-frame baseline is scored on the very same clips. On simulator data the agent and the
balls are found in each generated frame (the agent by its white, each ball by its colour) and
compared with the ground-truth state: action-following (the agent) and dynamics (the balls); and
each frame is redrawn by the simulator where its objects are read (`realism.py`): how much it looks
like a frame of this world (realism), and whether its balls are still compact balls (survival).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_episodes
from worldforge.data.sources.simulator import World
from worldforge.errors import WorldforgeError
from worldforge.evaluation import metrics
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.objects import Scene, position_errors, read_scene, truth_scored
from worldforge.evaluation.realism import dataset_worlds, realism_scores
from worldforge.models.streaming import rollout


class EvaluationError(WorldforgeError, ValueError):
    """A model and a dataset that cannot be evaluated together; the message names both and the field."""


@dataclass
class EvalClips:
    dataset: Path
    split: str
    source: str
    episodes: list[int]
    context: torch.Tensor  # (N, Tc, C, H, W) in [-1, 1]
    target: torch.Tensor  # (N, horizon, C, H, W) in [-1, 1]
    actions: torch.Tensor  # (N, Tc + horizon) int64 or (N, Tc + horizon, A) float32
    action_space: dict[str, Any]
    positions: (
        np.ndarray | None
    )  # (N, horizon, 1 + K, 2) true (x, y) of the agent, then each ball; simulator only
    fps: float
    scenes: list[Scene] | None = None  # per clip: background and object colours, from the recorded frames
    scored: np.ndarray | None = None  # (N, horizon, 1 + K) bool: objects found in the recorded target frames
    worlds: list[World] | None = None  # per clip: the simulator's world of its episode, to redraw frames
    # what depends on the clips alone (copy-last's scores, the recorded frames', prefixes), computed
    # once however many models are scored on them: the clips are never changed in place
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def remember(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()`, the first time `key` is asked for on these clips; its stored value after."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def horizon(self) -> int:
        return self.target.shape[1]

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.target.shape[-2:])

    def first(self, steps: int) -> EvalClips:
        """The same clips cut to their first `steps` target frames (a prefix of a longer rollout
        is scored against it)."""
        cut = slice(None, steps)
        return self.remember(
            ("first", steps),
            lambda: replace(
                self,
                target=self.target[:, cut],
                actions=self.actions[:, : self.context.shape[1] + steps],
                positions=None if self.positions is None else self.positions[:, cut],
                scored=None if self.scored is None else self.scored[:, cut],
            ),
        )


def to_model_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_clips(dataset: str | Path, config: EvalConfig, long_horizon: int | None = None) -> EvalClips:
    """The first `config.episodes` episodes of `config.split`, cut to context + horizon frames
    (context + `long_horizon` frames for the long rollout of `eval.long_horizon`).

    Raises EvaluationError naming the dataset and the eval field when episodes are too short or
    the split is empty."""
    dataset = Path(dataset)
    manifest = read_manifest(dataset)
    horizon, field = (
        (config.horizon, "eval.horizon") if long_horizon is None else (long_horizon, "eval.long_horizon")
    )
    length = config.context_frames + horizon
    episodes = []
    for episode in iter_episodes(dataset, config.split):
        if len(episode) < length:
            raise EvaluationError(
                f"{dataset}: episode {episode.episode} of split {config.split!r} has {len(episode)} "
                f"frames, but eval.context_frames + {field} = {length}; "
                f"lower {field} or build longer episodes"
            )
        episodes.append(episode)
        if len(episodes) == config.episodes:
            break
    if not episodes:
        raise EvaluationError(f"{dataset}: split {config.split!r} has no episodes (eval.split)")
    frames = torch.stack([to_model_frames(e.frames[:length]) for e in episodes])  # (N, L, 3, H, W)
    actions = torch.from_numpy(np.stack([e.actions[:length] for e in episodes]))
    positions = scenes = scored = worlds = None
    if manifest.source == "simulator" and all(e.state is not None for e in episodes):
        # The state is the agent's x, y, vx, vy, then x, y, vx, vy per ball: simulator.STATE_LAYOUT.
        state = np.stack([e.state[:length] for e in episodes]).astype(np.float64)  # (N, L, S)
        everything = state.reshape(len(episodes), length, -1, 4)[..., :2]  # (N, L, 1 + K, 2)
        scenes = [read_scene(e.frames[:length], clip) for e, clip in zip(episodes, everything)]
        positions = everything[:, config.context_frames :]
        scored = np.stack(
            [
                truth_scored(e.frames[config.context_frames : length], scene)
                for e, scene in zip(episodes, scenes)
            ]
        )
        worlds = dataset_worlds(manifest.config, episodes, str(dataset))
    return EvalClips(
        dataset=dataset,
        split=config.split,
        source=manifest.source,
        episodes=[e.episode for e in episodes],
        context=frames[:, : config.context_frames],
        target=frames[:, config.context_frames :],
        actions=actions,
        action_space=manifest.action_space.model_dump(exclude_none=True),
        positions=positions,
        fps=manifest.fps,
        scenes=scenes,
        scored=scored,
        worlds=worlds,
    )


def check_compatible(model, clips: EvalClips, config: EvalConfig, package: str) -> None:
    """Refuse, with the package and dataset fields named, a model that cannot roll out these clips."""
    tokenizer, dit = model.tokenizer_cfg, model.model_cfg
    where = f"{package}/config.json"
    if tuple(tokenizer.frame_size) != clips.frame_size or tokenizer.frame_channels != clips.target.shape[2]:
        raise EvaluationError(
            f"{where}: tokenizer.frame_size {tuple(tokenizer.frame_size)} x "
            f"{tokenizer.frame_channels} channels, "
            f"but {clips.dataset}/manifest.json frames are {clips.frame_size} x {clips.target.shape[2]}"
        )
    space = clips.action_space
    if space["kind"] != dit.action_space:
        raise EvaluationError(
            f"{where}: model.action_space is {dit.action_space!r}, "
            f"{clips.dataset} has {space['kind']!r} actions"
        )
    if space["kind"] == "discrete" and space["n"] > dit.num_actions:
        raise EvaluationError(
            f"{where}: model.num_actions {dit.num_actions} < {space['n']} actions of {clips.dataset}"
        )
    if space["kind"] == "continuous" and space["dim"] != dit.action_dim:
        raise EvaluationError(
            f"{where}: model.action_dim {dit.action_dim} != action dim {space['dim']} of {clips.dataset}"
        )
    r = model.frames_per_latent
    if (config.context_frames - 1) % r or config.horizon % r:
        raise EvaluationError(
            f"eval.context_frames {config.context_frames} must be 1 + k * {r} and "
            f"eval.horizon {config.horizon} a "
            f"multiple of {r}: the tokenizer of {package} compresses {r} frames into one latent frame"
        )


@torch.no_grad()
def predict(model, clips: EvalClips, config: EvalConfig, device: torch.device) -> torch.Tensor:
    """The model's rollouts of every clip, in batches: (N, horizon, C, H, W) on the CPU.

    The noise is seeded by `config.seed`, so two models with the same latent shape see the same noise."""
    generator = torch.Generator(device).manual_seed(config.seed)
    outputs = []
    for start in range(0, len(clips.episodes), config.batch_size):
        batch = slice(start, start + config.batch_size)
        result = rollout(
            model,
            clips.context[batch].to(device),
            clips.actions[batch].to(device),
            clips.horizon,
            steps=config.denoise_steps,
            generator=generator,
        )
        outputs.append(result.frames.float().cpu())
    return torch.cat(outputs)


def score(prediction: torch.Tensor, clips: EvalClips) -> dict[str, Any]:
    """Quality of predicted frames (N, horizon, C, H, W) against the clips' targets:
    `psnr_mean`, `psnr_per_step`, `ssim_mean`, `ssim_per_step`, `sharpness_mean` (the mean over
    steps of `sharpness_per_step`, `metrics.sharpness`) and, with ground-truth state,
    `agent_position_error` and `object_position_error` (the balls), each with its `_per_step` curve
    and `_found_fraction` (`objects.py`: normalised units; a missing object counts as a guess); with
    the episodes' simulator worlds, `realism_psnr_mean` and `object_survival` with their
    `_per_step` curves (`realism.realism_scores`)."""
    psnr = metrics.psnr(prediction, clips.target)  # (N, horizon)
    ssim = metrics.ssim(prediction, clips.target)
    sharp = metrics.sharpness(prediction, clips.target)  # (horizon,)
    scores: dict[str, Any] = {
        "psnr_mean": metrics.overall(psnr),
        "psnr_per_step": metrics.per_step(psnr),
        "ssim_mean": metrics.overall(ssim),
        "ssim_per_step": metrics.per_step(ssim),
        "sharpness_mean": metrics.overall(sharp),
        "sharpness_per_step": [float(v) for v in sharp],
    }
    if clips.positions is not None:
        frames = prediction.detach().to("cpu", torch.float32).numpy()
        errors, found = zip(
            *(
                position_errors(clip, truth, scene, scored)
                for clip, truth, scene, scored in zip(frames, clips.positions, clips.scenes, clips.scored)
            )
        )
        errors, found = np.stack(errors), np.stack(found)  # (N, horizon, 1 + K)
        for name, columns in (("agent", slice(0, 1)), ("object", slice(1, None))):
            error, scored = errors[..., columns], clips.scored[..., columns]
            if not scored.any():
                continue
            scores[f"{name}_position_error"] = metrics.overall(error)
            scores[f"{name}_position_error_per_step"] = metrics.per_step(error)
            scores[f"{name}_found_fraction"] = float(found[..., columns][scored].mean())
        if clips.worlds is not None:
            scores.update(realism_scores(frames, clips.worlds, clips.scenes, clips.scored))
    return scores


def baseline_scores(clips: EvalClips) -> dict[str, Any]:
    """The copy-last-frame baseline on the same clips, keys prefixed `baseline_` (scored once per
    clips, `EvalClips.remember`)."""

    def compute() -> dict[str, Any]:
        prediction = metrics.copy_last_frame(clips.context, clips.horizon)
        return {f"baseline_{key}": value for key, value in score(prediction, clips).items()}

    return dict(clips.remember("baseline", compute))


def prefix_scores(
    prediction: torch.Tensor, clips: EvalClips, horizons: list[int]
) -> dict[int, dict[str, Any]]:
    """Each horizon H of `horizons` scored on the first H frames of one longer rollout (N, T, C, H,
    W), T >= H: `score` and `baseline_scores` (curves of length H) and `motion_ratio` (mean over
    the prefix's second half, `metrics.motion_ratio`). Generation is causal, so the first H
    frames of a rollout are a rollout to H: one rollout serves every horizon."""
    entries = {}
    for horizon in horizons:
        clip = clips.first(horizon)
        frames = prediction[:, :horizon]
        half = horizon // 2
        entries[horizon] = {
            **score(frames, clip),
            **baseline_scores(clip),
            "motion_ratio": metrics.overall(metrics.motion_ratio(frames[:, half:], clip.target[:, half:])),
        }
    return entries


def detector_floor(clips: EvalClips) -> dict[str, Any]:
    """The recorded frames scored as a prediction: the detector's own error, the best
    action-following (agent) and dynamics (balls) can score (`agent_position_error_ground_truth`,
    `object_position_error_ground_truth`), and the most realism and object survival can
    (`truth_realism_psnr_mean`, `truth_object_survival`, each with its `_per_step` curve)."""
    if clips.positions is None:
        return {}
    truth = clips.remember("truth", lambda: score(clips.target, clips))  # scored once per clips
    floor: dict[str, Any] = {
        f"{name}_ground_truth": truth[name]
        for name in ("agent_position_error", "object_position_error")
        if name in truth
    }
    for key in ("realism_psnr_mean", "realism_psnr_per_step", "object_survival", "object_survival_per_step"):
        if key in truth:
            floor[f"truth_{key}"] = truth[key]
    return floor
