"""Stream training clips from a dataset's shards: `make_loader(path, split, config.data)`.

Each stored window (`window_frames` frames) gives the clips of `clip_frames` (T) frames that start
every `clip_stride` frames. Batches are dicts:
  frames   (B, T, C, H, W) float32 in [-1, 1] (converted from uint8 in the main process, so
           workers ship 4x fewer bytes)
  actions  (B, T) int64 or (B, T, A) float32; action t is taken after frame t
  state    (B, T, S) float32, when the dataset has ground-truth state
  episode, start  (B,) int64: which episode, and the clip's first frame in it

Who reads what, per epoch (deterministic for a given seed and epoch):
- shards are permuted by (seed, epoch), the same on every rank; rank r takes every world_size-th
  shard from r, and worker w of that rank every num_workers-th of those: each clip is read exactly
  once per epoch across all ranks and workers;
- with `resampled`, every (rank, worker) instead draws shards with replacement from its own seeded
  stream, and each rank yields total_clips / world_size clips per epoch (equal across ranks, which
  multi-node training needs);
- clips are shuffled in a buffer of `shuffle_buffer` per worker, seeded by (seed, epoch, rank, worker).

A damaged or truncated shard (unreadable, or fewer samples than the manifest records) is skipped
after its readable samples, with a `CorruptShardWarning`, and counted in `loader.corrupt`; once
more than `max_corrupt_fraction` of the rank's shards are corrupt, the loader raises DatasetError
naming them.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from worldforge.data.config import DataConfig
from worldforge.data.episode import DatasetError
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import decode_sample, read_shard_samples


class CorruptShardWarning(UserWarning):
    """A shard was skipped (partly or wholly) because it could not be read."""


def assigned_shards(n: int, rank: int, world_size: int, worker: int, workers: int, seed: int, epoch: int,
                    shuffle: bool) -> list[int]:
    """Indices of the shards (rank, worker) reads this epoch, without resampling."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return [int(i) for i in order[rank::world_size][worker::workers]]


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class ClipStream(IterableDataset):
    """What one (rank, worker) reads: `{"batch": dict | None, "corrupt": [(shard, reason)]}` items."""

    def __init__(self, paths: list[Path], samples: list[int], data: DataConfig, rank: int, world_size: int,
                 epoch: int, batches_per_rank: int):
        self.paths, self.samples, self.data = paths, samples, data
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.batches_per_rank = batches_per_rank

    def __iter__(self) -> Iterator[dict]:
        import webdataset as wds

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        data, loader = self.data, self.data.loader
        reports: list[tuple[str, str]] = []  # (shard, reason), drained into the next item
        bad: set[int] = set()
        if loader.resampled:
            shards = self._resampled(worker, bad)
        else:
            shards = iter(assigned_shards(len(self.paths), self.rank, self.world_size, worker, workers, data.seed,
                                          self.epoch, shuffle=loader.shuffle_buffer > 1))
        clips = self._clips(shards, reports, bad)
        if loader.shuffle_buffer > 1:
            rng = random.Random(_seed(data.seed, self.epoch, self.rank, worker))
            clips = wds.shuffle(loader.shuffle_buffer, initial=loader.shuffle_buffer, rng=rng)(clips)
        batches = wds.batched(loader.batch_size, collation_fn=collate, partial=not loader.drop_last)(clips)
        if loader.resampled:
            share = self.batches_per_rank // workers + (worker < self.batches_per_rank % workers)
            batches = islice(batches, share)
        for batch in batches:
            yield {"batch": batch, "corrupt": _drain(reports)}
        if reports:
            yield {"batch": None, "corrupt": _drain(reports)}

    def _resampled(self, worker: int, bad: set[int]) -> Iterator[int]:
        """Shards drawn with replacement, forever (the caller stops); known-corrupt ones are not redrawn."""
        rng = np.random.default_rng([self.data.seed, self.epoch, self.rank, worker, 1])
        while len(bad) < len(self.paths):
            index = int(rng.integers(len(self.paths)))
            if index not in bad:
                yield index

    def _clips(self, shards: Iterator[int], reports: list, bad: set[int]) -> Iterator[dict]:
        T, stride = self.data.clip_frames, self.data.clip_stride
        for index in shards:
            path, read = self.paths[index], 0
            try:
                for raw in read_shard_samples(path):
                    window = decode_sample(raw, str(path))
                    read += 1
                    for offset in range(0, len(window) - T + 1, stride):
                        yield {
                            "frames": window.frames[offset : offset + T],  # (T, H, W, 3) uint8
                            "actions": window.actions[offset : offset + T],
                            "state": None if window.state is None else window.state[offset : offset + T],
                            "episode": window.episode,
                            "start": int(window.meta["start"]) + offset,
                        }
            except DatasetError as error:
                reports.append((str(path), f"{str(error).removeprefix(str(path) + ': ')}; read {read} samples"))
                bad.add(index)
                continue
            if read != self.samples[index]:
                reports.append((str(path), f"{read} samples but the manifest records {self.samples[index]}"))
                bad.add(index)


def _drain(reports: list) -> list:
    drained = list(reports)
    reports.clear()
    return drained


def collate(clips: list[dict]) -> dict:
    """Stack clips into a batch. Only frames become a tensor here: a worker ships each tensor
    through its own shared-memory segment, which costs more than pickling the small arrays."""
    batch = {
        "frames": torch.from_numpy(np.stack([c["frames"] for c in clips])),  # (B, T, H, W, 3) uint8
        "actions": np.stack([c["actions"] for c in clips]),  # (B, T) int64 or (B, T, A) float32
        "episode": np.array([c["episode"] for c in clips], dtype=np.int64),  # (B,)
        "start": np.array([c["start"] for c in clips], dtype=np.int64),  # (B,)
    }
    if all(c["state"] is not None for c in clips):
        batch["state"] = np.stack([c["state"] for c in clips])  # (B, T, S) float32
    return batch


def _as_is(item: dict) -> dict:
    return item


def to_model_frames(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W) float32 in [-1, 1], contiguous.

    In numpy, in one pass over the permuted uint8 view plus one in place: several times faster
    than the torch equivalent on a busy CPU, where intra-op threads contend with the workers."""
    source = frames.numpy().transpose(0, 1, 4, 2, 3)  # (B, T, 3, H, W) view
    out = np.empty(source.shape, dtype=np.float32)
    np.multiply(source, np.float32(1 / 127.5), out=out, casting="unsafe")
    out -= np.float32(1.0)
    return torch.from_numpy(out)


class ClipLoader:
    """Iterate for one epoch of batches; `set_epoch(e)` before each epoch for a new order."""

    def __init__(self, folder: Path, split: str, data: DataConfig, rank: int, world_size: int, epoch: int = 0):
        folder = Path(folder)
        manifest = read_manifest(folder)
        if data.clip_frames > manifest.window_frames:
            raise DatasetError(f"data.clip_frames={data.clip_frames} is longer than the stored windows of "
                               f"{folder / 'manifest.json'} (window_frames={manifest.window_frames})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        shards = manifest.shards_of(split)
        if not shards:
            raise DatasetError(f"{folder / 'manifest.json'}: split {split!r} has no shards")
        if not data.loader.resampled and len(shards) < world_size:
            raise DatasetError(
                f"{folder}: split {split!r} has {len(shards)} shards for {world_size} ranks, so some ranks would "
                "read nothing; set data.loader.resampled=true or rebuild with a smaller data.shards.maxcount"
            )
        self.folder, self.split, self.data = folder, split, data
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.paths = [folder / s.name for s in shards]
        self.samples = [s.samples for s in shards]
        self.clips_per_window = (manifest.window_frames - data.clip_frames) // data.clip_stride + 1
        self.corrupt: dict[str, str] = {}  # shard path -> reason, over this loader's life

    @property
    def total_clips(self) -> int:
        """Clips in the split, over all ranks."""
        return sum(self.samples) * self.clips_per_window

    @property
    def rank_shards(self) -> int:
        if self.data.loader.resampled:
            return len(self.paths)
        return len(assigned_shards(len(self.paths), self.rank, self.world_size, 0, 1, 0, 0, False))

    def __len__(self) -> int:
        """Batches this rank yields per epoch (when no shard is corrupt)."""
        loader = self.data.loader
        if loader.resampled:
            return math.ceil(self.total_clips / self.world_size / loader.batch_size)
        workers, total = max(loader.num_workers, 1), 0
        for worker in range(workers):
            shards = assigned_shards(len(self.paths), self.rank, self.world_size, worker, workers, self.data.seed,
                                     self.epoch, loader.shuffle_buffer > 1)
            clips = sum(self.samples[i] for i in shards) * self.clips_per_window
            total += clips // loader.batch_size if loader.drop_last else math.ceil(clips / loader.batch_size)
        return total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        loader = self.data.loader
        stream = ClipStream(self.paths, self.samples, self.data, self.rank, self.world_size, self.epoch,
                            batches_per_rank=math.ceil(self.total_clips / self.world_size / loader.batch_size))
        batches = DataLoader(stream, batch_size=None, num_workers=loader.num_workers, collate_fn=_as_is)
        pin = torch.cuda.is_available()
        for item in batches:
            for shard, reason in item["corrupt"]:
                self._record_corrupt(shard, reason)
            if item["batch"] is not None:
                batch = {key: torch.from_numpy(value) for key, value in item["batch"].items() if key != "frames"}
                batch["frames"] = to_model_frames(item["batch"]["frames"])  # (B, T, 3, H, W) float in [-1, 1]
                if pin:  # page-locked: the trainer's non_blocking copies overlap with compute
                    batch = {key: value.pin_memory() for key, value in batch.items()}
                yield batch

    def _record_corrupt(self, shard: str, reason: str) -> None:
        if shard in self.corrupt:
            return
        self.corrupt[shard] = reason
        limit = self.data.loader.max_corrupt_fraction
        warnings.warn(f"{shard}: skipped, {reason} ({len(self.corrupt)} of {self.rank_shards} shards of rank "
                      f"{self.rank} corrupt so far; the limit is {limit:.0%})", CorruptShardWarning, stacklevel=3)
        if len(self.corrupt) > limit * self.rank_shards:
            listed = "\n  ".join(f"{name}: {why}" for name, why in self.corrupt.items())
            raise DatasetError(
                f"{self.folder}: {len(self.corrupt)} of {self.rank_shards} shards of split {self.split!r} on rank "
                f"{self.rank} are corrupt, above data.loader.max_corrupt_fraction={limit}:\n  {listed}\n"
                f"check them with `worldforge data verify {self.folder}` and rebuild the dataset"
            )


def make_loader(path: Path, split: str, config: DataConfig, *, rank: int | None = None,
                world_size: int | None = None, epoch: int = 0) -> ClipLoader:
    """A loader of `split` from the dataset at `path`, configured by `config` (`config.data`).
    `rank`/`world_size` default to torch.distributed's when it is initialised, else 0 and 1."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if distributed else 1
    return ClipLoader(Path(path), split, config, rank, world_size, epoch)
