"""A world model that learns the world: trained briefly on the simulator, it moves the agent where
the actions push it.

The model is the root conftest's `trained_world_model`: the quickstart's architecture at a smaller
size, trained for 400 steps on the simulator with one ball. After training, each held-out episode is rolled out twice from the same context
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
from worldforge.models.streaming import rollout
from worldforge.models.world_model import WorldModel

SIZE, LENGTH, CONTEXT, HELD = 32, 24, 3, 4  # HELD: frames an action is held for
WORLD = SimulatorConfig(objects=1, action_repeat=0.8)  # the root conftest's TRAINED_WORLD


def episodes(first: int, count: int) -> tuple[torch.Tensor, torch.Tensor, list[Scene]]:
    """Frames (N, L, 3, H, W), actions (N, L) and each episode's scene (background, colours)."""
    recorded = [record_episode(WORLD, SIZE, LENGTH, seed=7, index=i) for i in range(first, first + count)]
    frames = torch.stack([to_model_frames(e.frames) for e in recorded])
    scenes = [
        read_scene(e.frames, e.state.reshape(LENGTH, -1, 4)[..., :2].astype(np.float64)) for e in recorded
    ]
    return frames, torch.from_numpy(np.stack([e.actions for e in recorded])), scenes


def agent_after_holding(
    model: WorldModel, context: torch.Tensor, scenes: list[Scene], action: int
) -> np.ndarray:
    """Where the agent is after `HELD` generated frames of `action`, per episode: (N, 2) (x, y),
    NaN where it is not found (`evaluation.objects`: a faded agent still counts)."""
    actions = torch.full((len(context), CONTEXT + HELD), action)
    frames = rollout(model, context, actions, HELD, generator=torch.Generator().manual_seed(0)).frames
    return np.stack([locate(clip[-1:].numpy(), scene)[0, 0] for clip, scene in zip(frames, scenes)])


@pytest.mark.slow
def test_a_briefly_trained_model_moves_the_agent_the_way_the_action_pushes_it(trained_world_model):
    model = trained_world_model  # trained on episodes 0-95 of seed 7 (the root conftest)
    held_out, _, scenes = episodes(1000, 24)
    context = held_out[:, :CONTEXT]
    right, left, down, up = (
        agent_after_holding(model, context, scenes, ACTIONS.index(name))
        for name in ("right", "left", "down", "up")
    )
    found = (
        np.isfinite(right).all(1)
        & np.isfinite(left).all(1)
        & np.isfinite(down).all(1)
        & np.isfinite(up).all(1)
    )
    assert found.mean() > 0.9  # the agent is still drawn after the rollout
    moved_right = (right[found, 0] > left[found, 0]).mean()
    moved_down = (down[found, 1] > up[found, 1]).mean()
    assert moved_right > 0.5 and moved_down > 0.5, (moved_right, moved_down)


@pytest.mark.slow
def test_action_sensitivity_tells_the_trained_model_from_an_untrained_copy_last_one(trained_world_model):
    """Action sensitivity (`evaluation/sensitivity.py`): the same rollouts under another held-out
    episode's actions score lower PSNR for the trained model; the untrained residual model draws
    copy-last-frame whatever the actions, and scores exactly 0."""
    from pathlib import Path

    from worldforge.evaluation.config import EvalConfig
    from worldforge.evaluation.rollout_eval import EvalClips, predict
    from worldforge.evaluation.sensitivity import model_sensitivity

    frames, actions, _ = episodes(1000, 16)
    horizon = 8
    clips = EvalClips(
        dataset=Path("simulator"),
        split="test",
        source="simulator",
        episodes=list(range(16)),
        context=frames[:, :CONTEXT],
        target=frames[:, CONTEXT : CONTEXT + horizon],
        actions=actions[:, : CONTEXT + horizon],
        action_space={"kind": "discrete", "n": len(ACTIONS)},
        positions=None,
        fps=15.0,
    )
    config = EvalConfig(episodes=16, context_frames=CONTEXT, horizon=horizon, batch_size=16, device="cpu")
    cpu = torch.device("cpu")

    def measured(model: WorldModel) -> dict:
        return model_sensitivity(model, clips, config, cpu, predict(model, clips, config, cpu))

    trained = measured(trained_world_model)
    assert trained["action_sensitivity_db_mean"] > 0.3, trained["action_sensitivity_db_per_step"]
    assert trained["action_sensitivity_db_h8"] > 0.0
    assert trained["baseline_action_sensitivity_db_mean"] == 0.0

    untrained = WorldModel.from_config(
        trained_world_model.tokenizer_cfg,
        trained_world_model.model_cfg,
        trained_world_model.objective_cfg,
        trained_world_model.sampler_cfg,
    ).eval()
    assert measured(untrained)["action_sensitivity_db_mean"] == 0.0
