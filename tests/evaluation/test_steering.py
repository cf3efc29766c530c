"""`benchmarks/steering.py`: the simulator replayed under an episode's own actions is its recording,
and a model that learned the actions moves its agent the way a held key pushes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_episodes
from worldforge.models.world_model import package_config
from worldforge.packages import save_package

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "steering.py"
spec = importlib.util.spec_from_file_location("steering", SCRIPT)
steering = importlib.util.module_from_spec(spec)
spec.loader.exec_module(steering)


def test_the_simulator_replays_the_recording_and_a_held_key_from_where_it_ends(make_dataset):
    dataset = make_dataset("data.episodes=6", "data.splits={train: 0.5, test: 0.5}")
    data = read_manifest(dataset).config
    episodes = list(iter_episodes(dataset, "test"))
    assert episodes
    numbers, recorded = [e.episode for e in episodes], np.stack([e.actions for e in episodes])
    for context in (4, 10):  # under its own actions, each episode moves as recorded
        moves = steering.simulator_moves(data, numbers, recorded[:, : context + 6], context, axis=0)
        expected = [e.state[context + 5, 0] - e.state[context - 1, 0] for e in episodes]
        np.testing.assert_allclose(moves, expected, atol=1e-6)
    right = steering.held(recorded, 4, 4, action=4)
    assert (right[:, :3] == recorded[:, :3]).all() and (right[:, 3:] == 4).all() and right.shape[1] == 8
    moves = steering.simulator_moves(data, numbers, right, 4, axis=0)
    assert (moves > 0).mean() > 0.5  # "right" held from wherever the agent was: mostly rightwards


def test_the_table_puts_a_trained_model_beside_the_simulator(
    trained_world_model, trained_world, make_dataset, tmp_path, capsys
):
    dataset = make_dataset(
        f"data.simulator.objects={trained_world['objects']}",
        f"data.simulator.action_repeat={trained_world['action_repeat']}",
        f"data.episode_frames={trained_world['episode_frames']}",
        "data.episodes=16",
        "data.splits={train: 0.5, test: 0.5}",
    )
    package = save_package(tmp_path / "trained", package_config(trained_world_model), trained_world_model)
    assert steering.main([str(package), "--dataset", str(dataset), "--episodes", "8", "--threads", "1"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "simulator" in rows and "trained" in rows
    response = float(rows["trained"].split("|")[-2].split(",")[0])  # all keys: its displacement over the simulator's
    assert response > 0.2, rows["trained"]
