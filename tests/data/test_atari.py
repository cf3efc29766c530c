"""Atari through ale-py (skipped when the `atari` extra is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("gymnasium")

from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_windows
from worldforge.data.shards import build_dataset
from worldforge.data.sources.atari import AtariSource

ATARI = ["data.source=atari", "data.atari.game=Breakout", "data.episodes=3", "data.episode_frames=24"]


def test_atari_source_writes_real_frames(tiny_config, tmp_path):
    result = build_dataset(tiny_config(*ATARI), tmp_path / "breakout", track=False, progress=False)
    manifest = read_manifest(result.path)
    assert manifest.source == "atari" and manifest.fps == 15.0
    assert manifest.action_space.kind == "discrete" and manifest.action_space.names[:2] == ["NOOP", "FIRE"]
    windows = [w for split in manifest.splits for w in iter_windows(result.path, split)]
    assert len(windows) == 3 * 3  # 24 frames -> 3 windows of 8
    frames = np.stack([w.frames for w in windows])  # (N, 8, 32, 32, 3)
    assert frames.shape[-3:] == (32, 32, 3) and frames.std() > 10  # a real picture, not a blank
    assert all(np.isin(w.actions, range(manifest.action_space.n)).all() for w in windows)
    assert windows[0].meta["game"] == "ALE/Breakout-v5"
    assert manifest.source_info["per_frame"].startswith("reward.npy")
    for window in windows:  # the game's lives at every frame, and the score it paid on the way in
        assert len(window.info) == 8 and all(row["lives"] in range(6) for row in window.info)
        assert window.reward.shape == (8,) and (window.reward >= 0).all()


def test_atari_episodes_are_deterministic_for_a_seed(tiny_config):
    source = AtariSource(tiny_config(*ATARI).data)
    try:
        a, b, other = source.episode(1), source.episode(1), source.episode(2)
    finally:
        source.close()
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.actions, other.actions)


def test_an_unknown_game_is_a_clear_error(tiny_config):
    from worldforge.data.episode import DatasetError

    with pytest.raises(DatasetError, match="data.atari.game"):
        AtariSource(tiny_config("data.source=atari", "data.atari.game=NotAGame").data)
