"""How fast the WebDataset clip loader streams, against the ceiling of a plain in-memory loop.

Builds a simulator dataset in a temp dir (default: the quickstart data config), then, in the same
run, times one epoch of the training split:
- `webdataset`: `make_loader` (read tar shards, decode, cut clips, shuffle, batch, uint8 -> float),
  with 0 and 2 worker processes;
- `numpy in memory`: the same clips already decoded in RAM, shuffled, stacked into batches and
  converted to float the same way: no I/O, no decoding, no tar parsing.

Each row is the median of `--repeats` epochs; MB/s counts the uint8 frame bytes delivered; the
ratio is the row's clips/s over the in-memory loop's.

    python benchmarks/data_loader.py [--episodes 240] [--resolution 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from worldforge.config import load_config
from worldforge.data.loader import make_loader, to_model_frames
from worldforge.data.samples import iter_windows
from worldforge.data.shards import build_dataset


def time_epoch(batches) -> tuple[float, int]:
    start, clips = time.perf_counter(), 0
    for batch in batches:
        clips += len(batch["frames"])
    return time.perf_counter() - start, clips


def numpy_epochs(folder: Path, data, seed: int):
    """A generator factory: one epoch of in-memory batches per call, same clips as the loader."""
    T, stride, B = data.clip_frames, data.clip_stride, data.loader.batch_size
    windows = list(iter_windows(folder, "train"))
    clips = [(w, o) for w in windows for o in range(0, len(w) - T + 1, stride)]
    rng = np.random.default_rng(seed)

    def epoch():
        order = rng.permutation(len(clips))
        for i in range(0, len(order), B):
            chosen = [clips[j] for j in order[i : i + B]]
            frames = torch.from_numpy(np.stack([w.frames[o : o + T] for w, o in chosen]))  # (B, T, H, W, 3)
            actions = torch.from_numpy(np.stack([w.actions[o : o + T] for w, o in chosen]))
            yield {"frames": to_model_frames(frames), "actions": actions}

    return epoch, len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=240)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)  # the loop is single-threaded on both sides

    config = load_config(None, [f"data.episodes={args.episodes}", f"data.resolution={args.resolution}"])
    data = config.data
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        start = time.perf_counter()
        result = build_dataset(config, folder, track=False, progress=False)
        built = time.perf_counter() - start
        frames = sum(s.frames for s in result.manifest.splits.values())
        size = sum(s.bytes for s in result.manifest.shards) / 2**20
        print(f"dataset: {frames} frames at {args.resolution}px, {len(result.manifest.shards)} shards, "
              f"{size:.0f} MiB, built in {built:.1f}s ({frames / built:.0f} frames/s incl. writing)")

        clip_mb = data.clip_frames * args.resolution * args.resolution * 3 / 1e6
        rows = []
        epoch, total = numpy_epochs(folder, data, data.seed)
        time_epoch(epoch())  # warm-up
        runs = [time_epoch(epoch()) for _ in range(args.repeats)]
        baseline = statistics.median(clips / seconds for seconds, clips in runs)
        rows.append(("numpy in memory", baseline))
        for workers in args.workers:
            tuned = data.model_copy(update={"loader": data.loader.model_copy(update={"num_workers": workers})})
            loader = make_loader(folder, "train", tuned)
            time_epoch(loader)  # warm-up (page cache, worker start-up paths)
            runs = []
            for repeat in range(args.repeats):
                loader.set_epoch(repeat + 1)
                runs.append(time_epoch(loader))
            assert all(clips == total for _, clips in runs), "the loader must deliver every clip once per epoch"
            rows.append((f"webdataset, {workers} workers", statistics.median(c / s for s, c in runs)))

    print(f"train split: {total} clips of {data.clip_frames} frames, batch {data.loader.batch_size}, "
          f"shuffle buffer {data.loader.shuffle_buffer}, median of {args.repeats} epochs\n")
    print(f"| {'loader':<26} | {'clips/s':>9} | {'MB/s':>8} | {'ratio':>6} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 10}|{'-' * 8}|")
    for name, rate in rows:
        print(f"| {name:<26} | {rate:>9.0f} | {rate * clip_mb:>8.1f} | {rate / baseline:>6.2f} |")


if __name__ == "__main__":
    main()
