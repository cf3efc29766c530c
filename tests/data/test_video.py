"""Video folders through PyAV (skipped when the `video` extra is not installed). The test encodes
its own small videos."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from worldforge.data.loader import make_loader
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_windows
from worldforge.data.shards import build_dataset

FRAMES, FPS = 48, 30  # the root conftest's `write_video`: resampled to 15 fps, 24 frames, 3 windows of 8


def video_config(tiny_config, folder: Path, *extra: str):
    return tiny_config("data.source=video", f"data.video.folder={folder}", "data.video.fps=15", *extra)


def test_video_folder_is_resampled_and_bad_files_are_reported_with_counts(tiny_config, tmp_path, write_video):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write_video(folder / f"{name}.mp4")
    np.save(folder / "a.npy", np.arange(FRAMES) % 5)
    (folder / "c.jsonl").write_text(
        "\n".join(json.dumps({"action": 1}) for _ in range(FRAMES - 1))
    )  # one short

    result = build_dataset(video_config(tiny_config, folder), tmp_path / "ds", track=False, progress=False)
    manifest = read_manifest(result.path)
    assert manifest.action_space.model_dump(exclude_none=True) == {"kind": "discrete", "n": 5}
    assert manifest.fps == 15.0
    assert sorted(manifest.skipped) == [
        "b.mp4: no actions file (b.npy or b.jsonl)",
        f"c.mp4: {FRAMES} frames but c.jsonl has {FRAMES - 1} actions",
    ]
    windows = [w for split in manifest.splits for w in iter_windows(result.path, split)]
    assert [w.meta["start"] for w in windows] == [0, 8, 16] and {w.meta["file"] for w in windows} == {"a.mp4"}
    resampled = np.arange(0, FRAMES, 2) % 5  # every other video frame's action
    for window in windows:
        start = window.meta["start"]
        assert np.array_equal(window.actions, resampled[start : start + 8])
        assert window.frames.shape == (8, 32, 32, 3)
    # the square moves right by 2 video pixels per output frame: its column centroid grows
    columns = [np.nonzero(f.min(axis=-1) > 180)[1].mean() for f in windows[0].frames]
    assert all(b > a for a, b in itertools.pairwise(columns))


def test_continuous_actions_from_jsonl_reach_the_loader_as_float_vectors(tiny_config, tmp_path, write_video):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("one", "two"):
        write_video(folder / f"{name}.mkv")
        lines = [json.dumps([t / FRAMES, -t / FRAMES]) for t in range(FRAMES)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines))
    config = video_config(tiny_config, folder, "data.splits={train: 1.0}")
    result = build_dataset(config, tmp_path / "ds", track=False, progress=False)
    assert result.manifest.action_space.model_dump(exclude_none=True) == {"kind": "continuous", "dim": 2}
    batch = next(iter(make_loader(result.path, "train", config.data)))
    assert batch["actions"].shape == (4, 4, 2) and str(batch["actions"].dtype) == "torch.float32"
    assert "state" not in batch


def test_a_folder_without_usable_videos_is_a_clear_error(tiny_config, tmp_path, write_video):
    from worldforge.data.episode import DatasetError

    write_video(tmp_path / "lonely.mp4", frames=4)
    with pytest.raises(DatasetError, match="lonely.mp4: no actions file"):
        build_dataset(video_config(tiny_config, tmp_path), tmp_path / "ds", track=False, progress=False)
