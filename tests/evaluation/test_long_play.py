"""Long play past the recorded episodes: the simulator's continuation of a real dataset, the scores
that need no true future, and the evaluation's keys, report and skips."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from worldforge.data.samples import iter_episodes
from worldforge.evaluation import evaluate_package
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.long_play import continue_policy, load_play, play_steps, score_play
from worldforge.evaluation.metrics import copy_last_frame
from worldforge.evaluation.realism import REALISM_MAX_DB
from worldforge.evaluation.report import to_uint8
from worldforge.evaluation.rollout_eval import load_clips

PLAY_KEYS = (
    "realism_psnr",
    "truth_realism_psnr",
    "sharpness",
    "balls_found",
    "truth_balls_found",
    "agent_found",
    "truth_agent_found",
    "motion_ratio",
)


def play_config(**changes) -> EvalConfig:
    """The 3 test episodes of `sim_dataset` (16 recorded frames each) played 32 frames past 2 of context."""
    fields = {"context_frames": 2, "play_episodes": 3, "play_frames": 32, "device": "cpu", **changes}
    return EvalConfig(**fields)


def edited_copy(dataset, folder, edit) -> object:
    """A copy of `dataset` whose manifest.json is passed through `edit(tree)`."""
    copy = shutil.copytree(dataset, folder / dataset.name)
    manifest = copy / "manifest.json"
    tree = json.loads(manifest.read_text())
    edit(tree)
    manifest.write_text(json.dumps(tree))
    return copy


def test_the_simulator_continues_each_episode_from_its_recorded_frames_and_actions(sim_dataset):
    clips = load_play(sim_dataset, play_config())
    recorded = list(iter_episodes(sim_dataset, "test"))
    assert clips.episodes == [episode.episode for episode in recorded]
    assert clips.simulated.shape == (3, 32, 3, 32, 32) and clips.actions.shape == (3, 34)
    for index, episode in enumerate(recorded):
        played = torch.cat([clips.context[index], clips.simulated[index]])  # 34 frames
        np.testing.assert_array_equal(to_uint8(played[: len(episode)]), episode.frames)
        np.testing.assert_array_equal(clips.actions[index, : len(episode)].numpy(), episode.actions)
    again = load_play(sim_dataset, play_config())
    assert torch.equal(again.actions, clips.actions) and torch.equal(again.simulated, clips.simulated)


def test_the_behaviour_policy_continues_past_the_recorded_actions():
    rng = np.random.default_rng(0)
    assert continue_policy(np.array([4, 4, 2]), 2, 0.8, rng).tolist() == [4, 4]
    assert continue_policy(np.array([4, 4, 2]), 40, 1 - 1e-12, rng).tolist() == [4, 4] + [2] * 38  # repeats
    drawn = continue_policy(np.array([], dtype=np.int64), 600, 0.0, rng)  # never repeats: uniform draws
    assert set(drawn.tolist()) == set(range(6))


def test_play_is_scored_at_steps_32_64_128_and_256():
    assert play_steps(256) == [32, 64, 128, 256]
    assert play_steps(100) == [32, 64, 100]
    assert play_steps(16) == [16]


def test_copy_last_frame_plays_a_real_but_frozen_world_with_its_agent_always_found(sim_dataset):
    clips = load_play(sim_dataset, play_config())
    scores = score_play(copy_last_frame(clips.context, clips.frames), clips)
    assert scores["play_steps"] == [32]
    assert {f"play_h32_{key}" for key in PLAY_KEYS} <= set(scores)
    assert scores["play_h32_agent_found"] == scores["play_h32_truth_agent_found"] == 1.0
    assert scores["play_h32_motion_ratio"] == 0.0  # frozen
    assert (
        scores["play_h32_realism_psnr"]
        == scores["play_h32_truth_realism_psnr"]
        == pytest.approx(REALISM_MAX_DB)
    )  # real frames
    assert scores["play_h32_balls_found"] <= scores["play_balls"]

    itself = score_play(clips.simulated, clips)  # the simulator's play scored against itself
    assert itself["play_h32_sharpness"] == pytest.approx(1.0)
    assert itself["play_h32_motion_ratio"] == pytest.approx(1.0)
    assert itself["play_h32_balls_found"] == itself["play_h32_truth_balls_found"]
    assert itself["play_h32_realism_psnr"] == itself["play_h32_truth_realism_psnr"]


def test_evaluation_reports_realism_survival_and_long_play(project, sim_dataset, make_package, tmp_path):
    config = play_config(episodes=3, horizon=4, long_horizon=8, batch_size=3, videos=0, latency_repeats=1)
    out, package = tmp_path / "report", make_package()
    result = evaluate_package(package, sim_dataset, config, out_dir=out, track=False)

    for prefix in ("", "baseline_", "truth_"):
        assert len(result[f"{prefix}realism_psnr_per_step"]) == 4
        assert f"{prefix}realism_psnr_h8" in result  # step 8: from the long rollout
        assert len(result[f"long_{prefix}realism_psnr_per_step"]) == 8
    assert {"object_survival_h8", "baseline_object_survival_h8", "truth_object_survival"} <= set(result)
    assert result["realism_psnr_h8"] < result["baseline_realism_psnr_h8"]  # random weights: noise
    assert result["truth_realism_psnr_mean"] == pytest.approx(REALISM_MAX_DB)
    assert {f"play_h32_{key}" for key in PLAY_KEYS} <= set(result)
    assert result["play_episodes"] == 3 and result["play_frames"] == 32 and result["play_seconds"] > 0

    written = json.loads((package / "metrics.json").read_text())
    assert written["play_h32_realism_psnr"] == result["play_h32_realism_psnr"]
    with Image.open(out / "play" / "play_strip.png") as strip:  # 3 episodes x (simulator, model)
        assert strip.width == 3 * 64 + 2 * 2 and strip.height == 3 * (2 * 64 + 2) + 2 * 6
    page = (out / "report.html").read_text()
    assert "Long play" in page and "realism PSNR (dB)" in page and "balls compact" in page


def test_long_play_is_skipped_with_the_reason_where_it_cannot_run(sim_dataset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="worldforge.evaluation")
    assert load_play(sim_dataset, play_config(play_frames=0)) is None
    assert "long play off" in caplog.text

    atari = edited_copy(sim_dataset, tmp_path / "atari", lambda tree: tree.update(source="atari"))
    assert load_play(atari, play_config()) is None
    assert "'atari' dataset" in caplog.text

    def other_seed(tree):
        tree["config"]["seed"] += 1  # no longer the world the episodes were recorded in

    moved = edited_copy(sim_dataset, tmp_path / "moved", other_seed)
    assert load_play(moved, play_config()) is None
    assert "differs from its recording at frame 0" in caplog.text
    clips = load_clips(moved, play_config(episodes=3, horizon=4))
    assert clips.worlds is None  # realism is not scored either
    assert "realism is not scored" in caplog.text
