"""The play session steps the model one frame at a time with the KV cache, as `rollout` does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from worldforge.data.samples import iter_episodes
from worldforge.errors import WorldforgeError
from worldforge.evaluation.report import to_uint8
from worldforge.evaluation.rollout_eval import to_model_frames
from worldforge.models.streaming import rollout
from worldforge.play.session import Player, PlayError

CONTEXT = 3


def stepped_and_rolled_out(player: Player, actions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Episode 1 played one frame at a time under `actions` (noise seed 3), and `rollout` of the
    same context, recorded actions, actions and seed (uint8 frames, both)."""
    run = player.begin(episode=1, mode="play", seed=3)
    frames = np.stack([run.step(a).frame for a in actions])
    episode = player.episodes[1]
    recorded = torch.from_numpy(np.concatenate([episode.actions[: CONTEXT - 1], actions]))[None]
    expected = rollout(
        player.model,
        to_model_frames(episode.frames[:CONTEXT])[None],
        recorded,
        horizon=len(actions),
        generator=torch.Generator().manual_seed(3),
    ).frames[0]
    return frames, to_uint8(expected)


def test_stepping_one_frame_at_a_time_reproduces_the_rollout(package, held_out_dataset):
    """The same context, actions and noise seed give the frames `rollout` gives (to uint8)."""
    player = Player.open(package, held_out_dataset, context_frames=CONTEXT)
    frames, expected = stepped_and_rolled_out(player, [4, 4, 1, 0, 5, 3])
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1


def test_a_model_that_reads_earlier_actions_steps_as_its_rollout_does(tmp_path, make_world_model, held_out_dataset):
    """With `model.action_history` 3 the session keeps the actions each new frame reads (recorded ones
    first) and reproduces `rollout`, whose actions are conditioned all at once."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    model = make_world_model(context_window=3, action_history=3, num_actions=6)
    with torch.no_grad():  # a noticeable action embedding, so each lag's actions change the frames
        model.dit.action_embed.embedding.weight.normal_(0, 1.0)
    package = save_package(tmp_path / "history", package_config(model), model)
    player = Player.open(package, held_out_dataset, context_frames=CONTEXT)
    frames, expected = stepped_and_rolled_out(player, [4, 4, 1, 0, 5, 3])
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1


def test_replay_takes_the_recorded_actions_and_returns_the_recording_beside(package, held_out_dataset):
    player = Player.open(package, held_out_dataset, context_frames=CONTEXT)
    run = player.begin(episode=0, mode="replay")
    episode = player.episodes[0]
    steps = []
    while not steps or not steps[-1].done:
        steps.append(run.step(action=2))  # ignored in replay
    assert len(steps) == len(episode) - CONTEXT
    assert [s.action for s in steps] == episode.actions[CONTEXT - 1 : -1].tolist()
    assert all(np.array_equal(s.truth, episode.frames[CONTEXT + i]) for i, s in enumerate(steps))
    with pytest.raises(PlayError, match="no recorded frames left"):
        run.step()


def test_the_episodes_are_the_held_out_ones(package, held_out_dataset):
    player = Player.open(package, held_out_dataset, episodes=2, context_frames=CONTEXT)
    held_out = [e.episode for e in iter_episodes(held_out_dataset, "test")][:2]
    assert player.info()["episodes"] == held_out
    assert player.info()["labels"] == ["noop", "up", "down", "left", "right", "push"]


@pytest.mark.parametrize(
    ("action", "message"),
    [(6, r"integer in \[0, 6\)"), (-1, r"integer in \[0, 6\)"), ("right", "integer"), ([1.0], "integer")],
)
def test_an_action_outside_the_space_is_refused(package, held_out_dataset, action, message):
    run = Player.open(package, held_out_dataset, context_frames=CONTEXT).begin()
    with pytest.raises(PlayError, match=message):
        run.step(action)
    assert run.step(0).index == 1  # the run goes on


def test_a_dataset_of_another_frame_size_names_the_file_and_the_field(package, held_out_dataset, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(held_out_dataset, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["frame_shape"] = [64, 64, 3]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        WorldforgeError, match=r"manifest.json: frames are 64x64x3, but tokenizer.frame_size is \(32, 32\)"
    ):
        Player.open(package, other)


def test_unknown_episode_and_mode_are_refused(package, held_out_dataset):
    player = Player.open(package, held_out_dataset, episodes=2, context_frames=CONTEXT)
    with pytest.raises(PlayError, match=r"episode 5: expected 0 \.\. 1"):
        player.begin(episode=5)
    with pytest.raises(PlayError, match="mode 'watch'"):
        player.begin(mode="watch")


def test_continuous_actions_get_slider_ranges_and_vectors(continuous_package, continuous_dataset):
    player = Player.open(continuous_package, continuous_dataset, context_frames=CONTEXT)
    info = player.info()
    assert info["action_space"] == {"kind": "continuous", "dim": 2} and info["labels"] is None
    low, high = info["ranges"][0]
    assert low == 0.0 and 0.9 < high < 1.0 and info["ranges"][1][1] == 0.0  # what the recordings span
    run = player.begin()
    step = run.step([0.5, -0.25])
    assert step.action == [0.5, -0.25] and step.label == "+0.50 -0.25" and step.frame.shape == (32, 32, 3)
    with pytest.raises(PlayError, match="expected 2 finite numbers"):
        run.step([0.5])
    replay = player.begin(mode="replay").step()
    assert replay.action == pytest.approx(player.episodes[0].actions[CONTEXT - 1].tolist())
