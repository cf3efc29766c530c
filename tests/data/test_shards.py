"""Shards and manifest: what goes in comes out, splits never share an episode, rebuilds are
byte-identical, and damage is found and named."""

from __future__ import annotations

import json
import tarfile
from collections import defaultdict

import numpy as np
import pytest

from worldforge.data.config import SimulatorConfig
from worldforge.data.episode import DatasetError
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import (
    decode_sample,
    encode_window,
    iter_episodes,
    iter_windows,
    read_shard_samples,
)
from worldforge.data.shards import assign_splits, build_dataset
from worldforge.data.sources.simulator import record_episode
from worldforge.data.verify import verify_dataset


def test_every_sample_and_every_key_round_trips(tiny_dataset, tiny_config):
    data = tiny_config().data
    manifest = read_manifest(tiny_dataset)
    seen = 0
    for split in manifest.splits:
        for window in iter_windows(tiny_dataset, split):
            start = window.meta["start"]
            truth = record_episode(data.simulator, 32, data.episode_frames, data.seed, window.episode)
            stop = start + data.window_frames
            assert window.frames.dtype == np.uint8 and window.frames.shape == (8, 32, 32, 3)
            assert np.array_equal(window.frames, truth.frames[start:stop])
            assert window.actions.dtype == np.int64 and np.array_equal(
                window.actions, truth.actions[start:stop]
            )
            assert window.state.dtype == np.float32 and np.array_equal(window.state, truth.state[start:stop])
            assert window.meta["source"] == "simulator" and window.meta["split"] == split
            assert window.meta["fps"] == data.simulator.fps
            assert window.meta["action_space"] == {
                "kind": "discrete",
                "n": 6,
                "names": list(truth.action_space.names),
            }
            seen += 1
    assert seen == sum(s.samples for s in manifest.shards) == 16 * 2


def test_shards_hold_exactly_the_contract_keys(tiny_dataset):
    raw = next(read_shard_samples(tiny_dataset / "train-000000.tar"))
    assert sorted(k for k in raw if not k.startswith("__")) == [
        "actions.npy",
        "frames.npy",
        "json",
        "state.npy",
    ]
    assert raw["__key__"] == "ep000000_t00000" or raw["__key__"].startswith("ep")


def test_no_episode_is_in_two_splits_and_counts_match_the_manifest(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    episodes = defaultdict(set)
    for split in manifest.splits:
        for window in iter_windows(tiny_dataset, split):
            episodes[split].add(window.episode)
        assert len(episodes[split]) == manifest.splits[split].episodes
    assert episodes["train"].isdisjoint(episodes["val"]) and episodes["train"].isdisjoint(episodes["test"])
    assert episodes["val"].isdisjoint(episodes["test"])
    assert set().union(*episodes.values()) == set(range(16))


def test_split_assignment_gives_every_split_an_episode_when_it_can():
    assert sorted(assign_splits(3, {"train": 0.9, "val": 0.05, "test": 0.05}, seed=0)) == [
        "test",
        "train",
        "val",
    ]
    split_of = assign_splits(100, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert [split_of.count(s) for s in ("train", "val", "test")] == [80, 10, 10]
    assert split_of != assign_splits(100, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)


def test_shard_limits_by_count_and_size(tiny_dataset, tiny_config, tmp_path):
    assert max(s.samples for s in read_manifest(tiny_dataset).shards) == 3  # data.shards.maxcount=3
    by_size = build_dataset(
        tiny_config("data.shards.maxcount=1000", f"data.shards.maxsize={2**16}"),
        tmp_path / "by-size",
        track=False,
        progress=False,
    )
    sample_bytes = 8 * 32 * 32 * 3
    assert all(s.bytes < 2**16 + 3 * sample_bytes for s in by_size.manifest.shards)
    assert len(by_size.manifest.shards) > 3


def test_rebuild_with_same_config_and_seed_is_byte_identical(tiny_dataset, tiny_config, tmp_path):
    again = build_dataset(tiny_config(), tmp_path / "again", track=False, progress=False)
    for name in sorted(p.name for p in tiny_dataset.iterdir()):
        assert (tmp_path / "again" / name).read_bytes() == (tiny_dataset / name).read_bytes(), name
    other_seed = build_dataset(tiny_config("data.seed=1"), tmp_path / "seed1", track=False, progress=False)
    assert [s.sha256 for s in other_seed.manifest.shards] != [s.sha256 for s in again.manifest.shards]


def test_tar_headers_carry_no_time_or_owner(tiny_dataset):
    with tarfile.open(tiny_dataset / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "worldforge", "worldforge", 0o444)
    }
    names = [m.name for m in members]
    assert names[:4] == sorted(names[:4])  # keys sorted within a sample


def test_iter_episodes_puts_whole_episodes_back_together(tiny_dataset, tiny_config):
    data = tiny_config().data
    episodes = list(iter_episodes(tiny_dataset, "train"))
    assert len(episodes) == read_manifest(tiny_dataset).splits["train"].episodes
    for episode in episodes:
        truth = record_episode(data.simulator, 32, 16, data.seed, episode.episode)
        assert np.array_equal(episode.frames, truth.frames) and np.array_equal(episode.state, truth.state)
        assert np.array_equal(episode.actions, truth.actions) and episode.meta["start"] == 0


def test_reward_and_info_round_trip_and_a_bad_info_names_the_sample():
    window = record_episode(SimulatorConfig(), 32, 4, 0, 0)
    window.reward = np.array([0.0, 1.0, 0.5, -2.0], np.float32)
    window.info = [{"lives": 3}, {"lives": 3}, {"lives": 2, "flag": True}, {"name": "x", "xy": [1.5, 2.0]}]
    raw = encode_window(window, 0, "train")
    back = decode_sample(raw, "train-000000.tar")
    assert np.array_equal(back.reward, window.reward) and back.info == window.info
    with pytest.raises(DatasetError, match=r"train-000000.tar: sample ep000000_t00000: info.json has 3 rows for 4 frames"):
        decode_sample({**raw, "info.json": json.dumps(window.info[:3]).encode()}, "train-000000.tar")
    with pytest.raises(DatasetError, match=r"info.json is not valid JSON"):
        decode_sample({**raw, "info.json": b"[{"}, "train-000000.tar")


def test_verify_names_the_damaged_shard(dataset_copy):
    assert {status for _, status in verify_dataset(dataset_copy)} == {"ok"}
    shard = dataset_copy / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[4000] ^= 0xFF
    shard.write_bytes(bytes(data))
    (dataset_copy / "train-000002.tar").unlink()
    rows = dict(verify_dataset(dataset_copy))
    assert rows["train-000001.tar"].startswith("sha256")
    assert rows["train-000002.tar"] == "missing"
    assert rows["train-000000.tar"] == "ok"


def test_unknown_action_space_in_the_manifest_is_a_clear_error(dataset_copy):
    path = dataset_copy / "manifest.json"
    tree = json.loads(path.read_text())
    tree["action_space"] = {"kind": "joystick", "n": 4}
    path.write_text(json.dumps(tree))
    with pytest.raises(DatasetError, match=r"manifest.json: action_space: unknown action space"):
        read_manifest(dataset_copy)


def test_a_folder_without_manifest_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no manifest"):
        read_manifest(tmp_path)


def test_window_longer_than_episode_is_a_config_error(tiny_config):
    from worldforge.config import ConfigError

    with pytest.raises(ConfigError, match="window_frames"):
        tiny_config("data.window_frames=32")
