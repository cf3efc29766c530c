"""A world model that learns the world: trained briefly on the simulator, it moves the agent where
the actions push it.

The model is the quickstart's architecture at a smaller size (conv stem and head around the DiT,
the two previous frames stacked at the input, residual x0 prediction); the world is the simulator
with one ball. After training, each held-out episode is rolled out twice from the same context
frames, once holding "right" and once holding "left" (and likewise "down" / "up"), and the agent is
found in the generated frames. An untrained residual model rolls out copy-last-frame, so the agent
ends in the same place under both actions and the test fails; a model that learned the actions
puts it further right under "right" than under "left".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldforge.data.config import SimulatorConfig
from worldforge.data.sources.simulator import ACTIONS, record_episode
from worldforge.evaluation.objects import Scene, locate, read_scene
from worldforge.evaluation.rollout_eval import to_model_frames
from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.models.objective import flow_matching_loss
from worldforge.models.streaming import rollout
from worldforge.models.world_model import WorldModel

SIZE, LENGTH, CLIP, CONTEXT, HELD = 32, 24, 6, 3, 4  # HELD: frames an action is held for
WORLD = SimulatorConfig(objects=1, action_repeat=0.8)


def episodes(first: int, count: int) -> tuple[torch.Tensor, torch.Tensor, list[Scene]]:
    """Frames (N, L, 3, H, W), actions (N, L) and each episode's scene (background, colours)."""
    recorded = [record_episode(WORLD, SIZE, LENGTH, seed=7, index=i) for i in range(first, first + count)]
    frames = torch.stack([to_model_frames(e.frames) for e in recorded])
    scenes = [read_scene(e.frames, e.state.reshape(LENGTH, -1, 4)[..., :2].astype(np.float64)) for e in recorded]
    return frames, torch.from_numpy(np.stack([e.actions for e in recorded])), scenes


def small_model() -> WorldModel:
    torch.manual_seed(0)
    return WorldModel.from_config(
        TokenizerConfig(frame_size=(SIZE, SIZE), patch_size=1),
        ModelConfig(
            preset="tiny", depth=2, width=64, heads=2, patch_size=8, context_window=4, num_actions=len(ACTIONS),
            stem="conv", stem_channels=16, stack_previous=2,
        ),
        ObjectiveConfig(prediction="x0", residual=True, loss="x0", logit_mean=3.0),
        SamplerConfig(steps=1),
    )


def train(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.dit.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        episode = torch.randint(len(frames), (8,), generator=generator)
        start = torch.randint(LENGTH - CLIP + 1, (8,), generator=generator)
        index = start[:, None] + torch.arange(CLIP)
        loss, _ = flow_matching_loss(model, frames[episode[:, None], index], actions[episode[:, None], index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def agent_after_holding(model: WorldModel, context: torch.Tensor, scenes: list[Scene], action: int) -> np.ndarray:
    """Where the agent is after `HELD` generated frames of `action`, per episode: (N, 2) (x, y),
    NaN where it is not found (`evaluation.objects`: a faded agent still counts)."""
    actions = torch.full((len(context), CONTEXT + HELD), action)
    frames = rollout(model, context, actions, HELD, generator=torch.Generator().manual_seed(0)).frames
    return np.stack([locate(clip[-1:].numpy(), scene)[0, 0] for clip, scene in zip(frames, scenes)])


@pytest.mark.slow
def test_a_briefly_trained_model_moves_the_agent_the_way_the_action_pushes_it():
    model = small_model()
    frames, actions, _ = episodes(0, 96)
    train(model, frames, actions, steps=400)
    held_out, _, scenes = episodes(1000, 24)
    context = held_out[:, :CONTEXT]
    right, left, down, up = (
        agent_after_holding(model, context, scenes, ACTIONS.index(name)) for name in ("right", "left", "down", "up")
    )
    found = np.isfinite(right).all(1) & np.isfinite(left).all(1) & np.isfinite(down).all(1) & np.isfinite(up).all(1)
    assert found.mean() > 0.9  # the agent is still drawn after the rollout
    moved_right = (right[found, 0] > left[found, 0]).mean()
    moved_down = (down[found, 1] > up[found, 1]).mean()
    assert moved_right > 0.5 and moved_down > 0.5, (moved_right, moved_down)
