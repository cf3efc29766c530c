"""Build a dataset: record episodes from the configured source, cut them into windows, write
`{split}-{NNNNNN}.tar` shards with `webdataset.ShardWriter`, write `manifest.json` last, then track
the folder with DVC and push it to the remote.

Reproducible by construction: episodes are deterministic in (seed, index), splits are a seeded
permutation, tar headers are fixed (mtime 0, uid/gid 0, one user/group name, mode 0444, keys
sorted by the writer) and the manifest holds no wall-clock time. The same config and seed give
byte-identical shards and the same DVC hash.

The folder is built next to its destination (`.NAME.partial`) and moved into place when complete,
so an interrupted build never leaves a half-written dataset where a finished one is expected.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import worldforge
from worldforge.config import WorldforgeConfig
from worldforge.core.lineage import DataRepo
from worldforge.core.project import Project
from worldforge.data.config import SPLITS, DataConfig
from worldforge.data.episode import DatasetError
from worldforge.data.manifest import Manifest, ShardRecord, SplitRecord, sha256_file
from worldforge.data.samples import encode_window
from worldforge.data.sources import make_source

TAR_HEADER = {"mtime": 0, "user": "worldforge", "group": "worldforge", "mode": 0o444}
CONTENT_KEYS = ("source", "seed", "resolution", "episodes", "episode_frames", "splits", "window_frames", "shards")


@dataclass
class BuildResult:
    path: Path
    manifest: Manifest
    dvc_md5: str | None  # None when the dataset was not tracked


def assign_splits(episodes: int, fractions: dict[str, float], seed: int) -> list[str]:
    """The split of each episode index: counts by largest remainder (every split with a positive
    fraction gets at least one episode when there are enough), members by a seeded permutation."""
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    exact = np.array([fractions[s] * episodes for s in names])
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: episodes - counts.sum()]:
        counts[i] += 1
    for i in range(len(names)):  # a tiny dataset still gets a val/test episode if it can spare one
        if counts[i] == 0 and counts.max() > 1:
            counts[i], counts[counts.argmax()] = 1, counts.max() - 1
    order = np.random.default_rng([seed, 7]).permutation(episodes)
    split_of = [""] * episodes
    for name, members in zip(names, np.split(order, np.cumsum(counts)[:-1])):
        for index in members:
            split_of[index] = name
    return split_of


def content_config(data: DataConfig) -> dict:
    """The part of the data config that determines the shards' bytes (not loader settings)."""
    return data.model_dump(mode="json", include={*CONTENT_KEYS, data.source})


def default_output(data: DataConfig, project: Project | None = None) -> Path:
    return (project or Project.current()).datasets / data.dataset_name


def build_dataset(config: WorldforgeConfig, out: Path, track: bool = True, progress: bool = True) -> BuildResult:
    """Record `config.data`'s episodes into shards + manifest at `out`; with `track`, `dvc add` the
    folder (it must be under the project root) and push it. Returns the path, manifest and md5."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from webdataset import ShardWriter

    data, out = config.data, Path(out).resolve()
    project = Project.current()
    if track and not out.is_relative_to(project.root):
        raise DatasetError(f"{out} is outside the project root {project.root}: DVC can only track datasets "
                           "under it (use --no-dvc, set WORLDFORGE_ROOT, or build under <root>/datasets)")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pattern = str(staging).replace("%", "%%") + "/{split}-%06d.tar"

    source = make_source(data)
    writers: dict[str, ShardWriter] = {}
    samples_in: Counter[str] = Counter()  # shard file -> samples
    stats = {split: Counter() for split in SPLITS if data.splits.get(split, 0) > 0}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        episodes = source.available(data.episodes)
        split_of = assign_splits(episodes, data.splits, data.seed)
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(f"{source.name} episodes -> {out.name}", total=episodes)
            for index in range(episodes):
                episode = source.episode(index)
                bar.advance(task)
                if episode is None:
                    continue
                split = split_of[index]
                if split not in writers:
                    writers[split] = ShardWriter(pattern.format(split=split), maxcount=data.shards.maxcount,
                                                 maxsize=data.shards.maxsize, verbose=0, **TAR_HEADER)
                windows = episode.windows(data.window_frames)
                for start, window in windows:
                    writers[split].write(encode_window(window, start, split))
                    samples_in[writers[split].fname] += 1
                stats[split].update(episodes=1, samples=len(windows), frames=len(windows) * data.window_frames)
    finally:
        for writer in writers.values():
            writer.close()
        source.close()
    if not samples_in:
        raise DatasetError(f"data.source={data.source}: no episode could be recorded; "
                           f"problems: {'; '.join(source.problems) or 'none reported'}")

    shards = [
        ShardRecord(name=Path(f).name, split=Path(f).name.split("-")[0], samples=n,
                    bytes=Path(f).stat().st_size, sha256=sha256_file(Path(f)))
        for f, n in sorted(samples_in.items(), key=lambda item: (SPLITS.index(Path(item[0]).name.split("-")[0]), item[0]))
    ]
    manifest = Manifest(
        tool=f"worldforge {worldforge.__version__}",
        created=_reproducible_time(),
        source=data.source,
        config=content_config(data),
        source_info=source.describe(),
        frame_shape=(data.resolution, data.resolution, 3),
        window_frames=data.window_frames,
        fps=source.fps,
        action_space=source.action_space,
        splits={split: SplitRecord(**{k: counts[k] for k in ("episodes", "samples", "frames")})
                for split, counts in stats.items()},
        shards=shards,
        skipped=source.problems,
    )
    manifest.write(staging)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)

    md5 = None
    if track:
        repo = DataRepo(project)
        md5 = repo.track(out)
        repo.push(out)
    return BuildResult(out, manifest, md5)


def _reproducible_time() -> str | None:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).isoformat()
