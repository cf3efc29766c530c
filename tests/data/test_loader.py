"""The clip loader: the batch contract, exact coverage across ranks and workers, deterministic
order, and what happens when shards are damaged."""

from __future__ import annotations

import tarfile
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from worldforge.data.episode import DatasetError
from worldforge.data.loader import CorruptShardWarning, make_loader
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_windows


def clip_ids(loader) -> list[tuple[int, int]]:
    return [(int(e), int(s)) for batch in loader for e, s in zip(batch["episode"], batch["start"])]


def all_clip_ids(folder, split, data) -> Counter:
    ids = Counter()
    for window in iter_windows(folder, split):
        for offset in range(0, len(window) - data.clip_frames + 1, data.clip_stride):
            ids[(window.episode, window.meta["start"] + offset)] += 1
    return ids


def test_batches_follow_the_contract(tiny_dataset, tiny_config):
    data = tiny_config().data
    batch = next(iter(make_loader(tiny_dataset, "train", data)))
    B, T = data.loader.batch_size, data.clip_frames
    assert batch["frames"].shape == (B, T, 3, 32, 32) and batch["frames"].dtype == torch.float32
    assert batch["frames"].is_contiguous()
    assert -1.0 <= batch["frames"].min() and batch["frames"].max() <= 1.0 and batch["frames"].max() == 1.0
    assert batch["actions"].shape == (B, T) and batch["actions"].dtype == torch.int64
    assert batch["state"].shape == (B, T, 16) and batch["state"].dtype == torch.float32
    # frames match the stored window the clip was cut from
    episode, start = int(batch["episode"][0]), int(batch["start"][0])
    window = next(
        w
        for w in iter_windows(tiny_dataset, "train")
        if w.episode == episode and w.meta["start"] <= start < w.meta["start"] + len(w)
    )
    offset = start - window.meta["start"]
    expected = torch.from_numpy(window.frames[offset : offset + T]).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(batch["frames"][0], expected)


def test_each_clip_is_read_exactly_once_per_epoch_across_2_ranks_and_2_workers(tiny_dataset, tiny_config):
    data = tiny_config("data.loader.num_workers=2").data
    expected = all_clip_ids(tiny_dataset, "train", data)
    seen = Counter()
    for rank in range(2):
        seen.update(clip_ids(make_loader(tiny_dataset, "train", data, rank=rank, world_size=2)))
    assert seen == expected and set(seen.values()) == {1}
    assert sum(expected.values()) == 26 * 3  # 26 train windows, 3 clips of 4 frames (stride 2) in 8


def test_len_is_the_number_of_batches_yielded(tiny_dataset, tiny_config):
    data = tiny_config("data.loader.num_workers=2").data
    loader = make_loader(tiny_dataset, "train", data, rank=1, world_size=2)
    assert len(loader) == sum(1 for _ in loader)


def test_order_is_deterministic_for_a_seed_and_epoch(tiny_dataset, tiny_config):
    data = tiny_config("data.loader.num_workers=2").data
    first = clip_ids(make_loader(tiny_dataset, "train", data, epoch=3))
    assert first == clip_ids(make_loader(tiny_dataset, "train", data, epoch=3))
    loader = make_loader(tiny_dataset, "train", data)
    loader.set_epoch(4)
    other_epoch = clip_ids(loader)
    assert other_epoch != first and sorted(other_epoch) == sorted(first)


def test_resampled_ranks_yield_equal_epochs(tiny_dataset, tiny_config):
    data = tiny_config("data.loader.resampled=true", "data.loader.num_workers=2").data
    counts = []
    for rank in range(3):  # 9 shards: without resampling, ranks would get 3 shards of unequal sizes
        loader = make_loader(tiny_dataset, "train", data, rank=rank, world_size=3)
        counts.append(sum(len(b["episode"]) for b in loader))
    total = sum(all_clip_ids(tiny_dataset, "train", data).values())
    assert counts[0] == counts[1] == counts[2] >= total // 3


def test_too_few_shards_for_the_ranks_is_a_clear_error(tiny_dataset, tiny_config):
    shards = len(read_manifest(tiny_dataset).shards_of("val"))
    with pytest.raises(DatasetError, match="resampled=true"):
        make_loader(tiny_dataset, "val", tiny_config().data, rank=0, world_size=shards + 1)


def test_a_truncated_shard_is_skipped_with_a_warning_and_counted(dataset_copy, tiny_config):
    data = tiny_config("data.loader.max_corrupt_fraction=0.2", "data.loader.num_workers=2").data
    clean = sum(all_clip_ids(dataset_copy, "train", data).values())
    shard = dataset_copy / "train-000004.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # cut in the middle of a sample
    loader = make_loader(dataset_copy, "train", data)
    with pytest.warns(CorruptShardWarning, match="train-000004.tar"):
        ids = clip_ids(loader)
    assert list(loader.corrupt) == [str(shard)]
    assert clean - 3 * 3 <= len(ids) < clean  # the shard's readable samples are kept, the rest lost
    assert len(set(ids)) == len(ids)


def test_a_shard_cut_at_a_sample_boundary_is_caught_by_the_manifest_count(dataset_copy, tiny_config):
    data = tiny_config("data.loader.max_corrupt_fraction=0.2").data
    shard = dataset_copy / "train-000000.tar"
    with tarfile.open(shard) as tar:
        second_sample = tar.getmembers()[4].offset  # 4 members per sample
    shard.write_bytes(shard.read_bytes()[:second_sample] + b"\0" * 1024)  # a well-formed, shorter tar
    loader = make_loader(dataset_copy, "train", data)
    with pytest.warns(CorruptShardWarning, match="1 samples but the manifest records 3"):
        clip_ids(loader)
    assert list(loader.corrupt) == [str(shard)]


def test_mostly_corrupt_shards_stop_the_loader_with_an_error_naming_them(dataset_copy, tiny_config):
    data = tiny_config("data.loader.max_corrupt_fraction=0.5", "data.loader.num_workers=2").data
    shards = sorted(dataset_copy.glob("train-*.tar"))
    for shard in shards[:-1]:
        shard.write_bytes(b"this is not a tar file" * 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptShardWarning)
        with pytest.raises(DatasetError, match="max_corrupt_fraction=0.5") as error:
            clip_ids(make_loader(dataset_copy, "train", data))
    named = [s.name for s in shards if s.name in str(error.value)]
    assert len(named) == 5 and shards[-1].name not in named  # 5 of 9 is the first count above half
    assert "worldforge data verify" in str(error.value)


def test_clips_longer_than_the_stored_windows_are_refused(tiny_dataset, tiny_config):
    data = tiny_config().data.model_copy(update={"clip_frames": 9})
    with pytest.raises(DatasetError, match="window_frames=8"):
        make_loader(tiny_dataset, "train", data)


def test_float_conversion_maps_0_and_255_to_the_ends():
    from worldforge.data.loader import to_model_frames

    frames = torch.from_numpy(np.array([0, 255, 128], dtype=np.uint8).reshape(1, 1, 1, 1, 3))
    out = to_model_frames(frames)  # (1, 1, 3, 1, 1)
    assert out.shape == (1, 1, 3, 1, 1)
    assert out.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], rel=1e-4)
