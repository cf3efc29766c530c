"""Action sensitivity: does the model's future depend on the actions it is given? (Genie's
delta-t-PSNR, for every dataset, with or without simulator state.)

Each held-out clip is rolled out twice from the same context with the same noise: once under its
recorded actions, once under the actions of another held-out episode (clip i takes clip i + 1's,
cyclically) from the action that leads to the first generated frame on. The context's own earlier
actions stay, so both rollouts start from the same understanding of the past. Per step,

    sensitivity = PSNR(rollout under the recorded actions, truth)
                - PSNR(rollout under the other episode's actions, truth)

averaged over clips, in dB. A model that ignores its actions draws the same frames both times and
scores exactly 0 (copy-last-frame does, by construction); one that follows them scores above 0,
as far as the two episodes' actions differ. It needs no ground-truth state: on datasets without it
(Atari, Gymnasium, video folders) it is the measure of action-following the gates read
(`registry.min_action_sensitivity_db`).

Keys: `action_sensitivity_db_per_step`, `action_sensitivity_db_mean`, `action_sensitivity_db_h{H}`
for each step H, and copy-last-frame's twins prefixed `baseline_`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from worldforge.evaluation import metrics
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.rollout_eval import EvalClips, predict

KEY = "action_sensitivity_db"


def other_actions(clips: EvalClips) -> torch.Tensor:
    """The clips' actions with everything from the last context action on (the actions that drive
    the generated frames) taken from the next clip's episode, cyclically."""
    if len(clips.episodes) < 2:
        raise ValueError("action sensitivity needs at least 2 held-out episodes (eval.episodes)")
    start = clips.context.shape[1] - 1  # action t leads to frame t + 1: this one to the first generated
    swapped = clips.actions.clone()
    swapped[:, start:] = torch.roll(clips.actions[:, start:], shifts=-1, dims=0)
    return swapped


def sensitivity(
    recorded: torch.Tensor, other: torch.Tensor, clips: EvalClips, prefix: str = ""
) -> dict[str, Any]:
    """The keys of this module for two rollouts (N, horizon, C, H, W) of `clips`: under the
    recorded actions and under `other_actions`."""
    gap = metrics.psnr(recorded, clips.target) - metrics.psnr(other, clips.target)  # (N, horizon)
    curve = metrics.per_step(gap)
    scores: dict[str, Any] = {
        f"{prefix}{KEY}_per_step": curve,
        f"{prefix}{KEY}_mean": metrics.overall(gap),
    }
    scores.update({f"{prefix}{KEY}_h{step}": value for step, value in enumerate(curve, start=1)})
    return scores


def baseline_sensitivity(clips: EvalClips) -> dict[str, Any]:
    """Copy-last-frame's, prefixed `baseline_`: it repeats the last context frame whatever the
    actions, so both of its rollouts are the same and it scores 0 at every step."""

    def compute() -> dict[str, Any]:
        frames = metrics.copy_last_frame(clips.context, clips.horizon)  # never reads the actions
        return sensitivity(frames, frames, clips, prefix="baseline_")

    return dict(clips.remember("action_sensitivity", compute)) if len(clips.episodes) > 1 else {}


def model_sensitivity(
    model, clips: EvalClips, config: EvalConfig, device: torch.device, recorded: torch.Tensor
) -> dict[str, Any]:
    """The model's action sensitivity on `clips`, given its rollouts under the recorded actions
    (`predict`, same config and so the same noise), and copy-last-frame's; {} with a single clip
    (no other episode to take actions from)."""
    if len(clips.episodes) < 2:
        return {}
    other = predict(model, replace(clips, actions=other_actions(clips)), config, device)
    return {**sensitivity(recorded, other, clips), **baseline_sensitivity(clips)}
