"""`benchmarks/steering.py`: the simulator continued from a recorded state is the recording's own
continuation, and a model that learned the actions moves its agent the way a held key pushes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_episodes
from worldforge.evaluation.realism import dataset_worlds
from worldforge.models.world_model import package_config
from worldforge.packages import save_package

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "steering.py"
spec = importlib.util.spec_from_file_location("steering", SCRIPT)
steering = importlib.util.module_from_spec(spec)
spec.loader.exec_module(steering)


def test_the_simulator_set_to_a_recorded_state_continues_as_recorded(make_dataset):
    dataset = make_dataset("data.episodes=6", "data.splits={train: 0.5, test: 0.5}")
    episodes = list(iter_episodes(dataset, "test"))
    worlds = dataset_worlds(read_manifest(dataset).config, episodes, str(dataset))
    assert worlds is not None and episodes
    for episode, world in zip(episodes, worlds):
        for start in (3, 9):
            world_then = steering.continued(world, episode.state[start], episode.actions[start : start + 6])
            np.testing.assert_allclose(world_then.state(), episode.state[start + 6], atol=1e-5)
    held = steering.simulator_moves(worlds, np.stack([e.state[3] for e in episodes]), 4, 4, axis=0)
    assert (held > 0).mean() > 0.5  # "right" held from wherever the agent was: mostly rightwards


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
