"""Action sensitivity on hand-made rollouts: a square that each action moves one way.

The "models" here draw frames by a known rule, so what the measure should say is known: one that
moves the square by the actions it is given follows them (above 0 dB); one that moves it the same
way whatever the actions ignores them (exactly 0 dB), however well it scores otherwise; copy-last-
frame scores 0. The measure on a trained network is in tests/models/test_action_following.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worldforge.evaluation.rollout_eval import EvalClips
from worldforge.evaluation.sensitivity import baseline_sensitivity, other_actions, sensitivity

SIZE, SQUARE, STEP, CONTEXT, HORIZON = 24, 6, 3, 3, 6
MOVES = torch.tensor([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]])  # stay, left, right, up, down as (dy, dx)


def draw(start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Frames (N, L, 3, SIZE, SIZE) in [-1, 1] of a white square at `start` (N, 2) moved by each
    action of `actions` (N, L - 1): action t moves it between frames t and t + 1."""
    n, length = actions.shape[0], actions.shape[1] + 1
    frames = torch.full((n, length, 3, SIZE, SIZE), -1.0)
    position = start.clone()
    for t in range(length):
        for b in range(n):
            y, x = position[b].tolist()
            frames[b, t, :, y : y + SQUARE, x : x + SQUARE] = 1.0
        if t < length - 1:
            position = (position + STEP * MOVES[actions[:, t]]).clamp(0, SIZE - SQUARE)
    return frames


@pytest.fixture
def clips() -> EvalClips:
    """4 recorded clips: CONTEXT frames then HORIZON, under sticky random actions."""
    generator = torch.Generator().manual_seed(0)
    actions = torch.randint(1, len(MOVES), (4, CONTEXT + HORIZON), generator=generator)
    start = torch.full((4, 2), (SIZE - SQUARE) // 2)
    frames = draw(start, actions[:, :-1])
    return EvalClips(
        dataset=Path("hand-made"),
        split="test",
        source="video",
        episodes=[0, 1, 2, 3],
        context=frames[:, :CONTEXT],
        target=frames[:, CONTEXT:],
        actions=actions,
        action_space={"kind": "discrete", "n": len(MOVES)},
        positions=None,
        fps=15.0,
    )


def follows(clips: EvalClips, actions: torch.Tensor) -> torch.Tensor:
    """A perfect model: moves the square from where the context left it by the actions it is given."""
    last = clips.context[:, -1, 0]  # (N, SIZE, SIZE)
    start = torch.stack([torch.nonzero(frame > 0)[0] for frame in last])
    return draw(start, actions[:, CONTEXT - 1 : -1])[:, 1:]


def ignores(clips: EvalClips, actions: torch.Tensor) -> torch.Tensor:
    """A model that always moves the square right, whatever it is told."""
    held = torch.full_like(actions, 2)
    return follows(clips, held)


def test_only_the_actions_that_drive_the_generated_frames_are_taken_from_another_episode(clips):
    swapped = other_actions(clips)
    assert torch.equal(swapped[:, : CONTEXT - 1], clips.actions[:, : CONTEXT - 1])  # the context's own
    assert torch.equal(swapped[0, CONTEXT - 1 :], clips.actions[1, CONTEXT - 1 :])  # the next episode's
    assert torch.equal(swapped[-1, CONTEXT - 1 :], clips.actions[0, CONTEXT - 1 :])  # cyclically


def test_a_model_that_follows_its_actions_scores_above_zero_and_one_that_ignores_them_zero(clips):
    swapped = other_actions(clips)
    followed = sensitivity(follows(clips, clips.actions), follows(clips, swapped), clips)
    ignored = sensitivity(ignores(clips, clips.actions), ignores(clips, swapped), clips)
    assert followed["action_sensitivity_db_mean"] > 3.0
    assert followed["action_sensitivity_db_h1"] >= 0.0  # the first move may coincide
    assert followed["action_sensitivity_db_h6"] > 3.0
    assert len(followed["action_sensitivity_db_per_step"]) == HORIZON
    assert ignored["action_sensitivity_db_mean"] == 0.0
    assert set(ignored["action_sensitivity_db_per_step"]) == {0.0}


def test_copy_last_frame_ignores_the_actions(clips):
    baseline = baseline_sensitivity(clips)
    assert baseline["baseline_action_sensitivity_db_mean"] == 0.0
    assert baseline["baseline_action_sensitivity_db_h6"] == 0.0


def test_one_episode_has_no_other_to_take_actions_from(clips):
    from dataclasses import replace

    single = replace(
        clips, episodes=[0], context=clips.context[:1], target=clips.target[:1], actions=clips.actions[:1]
    )
    assert baseline_sensitivity(single) == {}
    with pytest.raises(ValueError, match="at least 2 held-out episodes"):
        other_actions(single)
