"""The clip sample format (docs/design.md) and reading it back: encode a window, decode a sample,
read a shard, and put held-out windows back together into whole episodes for evaluation.

A sample is one window of one episode, stored under the key `ep{episode:06d}_t{start:05d}`:
  frames.npy   uint8 (T, H, W, 3)
  actions.npy  int64 (T,) discrete or float32 (T, A) continuous; action t is taken after frame t
  state.npy    float32 (T, S) ground-truth state (the simulator's; a Gymnasium observation vector)
  reward.npy   float32 (T,) reward received on the way into each frame (Gymnasium and Atari)
  info.json    a JSON list of T dicts: the environment's `info` at each frame (Gymnasium and Atari)
  json         {"source", "episode", "start", "fps", "action_space", "split", ...source extras}
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from worldforge.data.episode import ActionSpace, DatasetError, Episode
from worldforge.data.manifest import read_manifest

REQUIRED = ("frames.npy", "actions.npy", "json")


def sample_key(episode: int, start: int) -> str:
    return f"ep{episode:06d}_t{start:05d}"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_window(window: Episode, start: int, split: str) -> dict[str, bytes | str]:
    """A window (an `Episode` slice starting at frame `start` of its episode) -> a WebDataset sample."""
    meta = {
        **window.meta,
        "source": window.source,
        "episode": window.episode,
        "start": start,
        "fps": window.fps,
        "action_space": window.action_space.model_dump(exclude_none=True),
        "split": split,
    }
    sample = {
        "__key__": sample_key(window.episode, start),
        "frames.npy": npy_bytes(window.frames.astype(np.uint8, copy=False)),
        "actions.npy": npy_bytes(window.actions),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }
    if window.state is not None:
        sample["state.npy"] = npy_bytes(window.state.astype(np.float32, copy=False))
    if window.reward is not None:
        sample["reward.npy"] = npy_bytes(window.reward.astype(np.float32, copy=False))
    if window.info is not None:
        sample["info.json"] = json.dumps(window.info, sort_keys=True).encode()
    return sample


def _array(raw: dict, key: str, where: str) -> np.ndarray:
    try:
        return np.lib.format.read_array(io.BytesIO(raw[key]), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise DatasetError(f"{where}: {key} is not a valid .npy array ({error})") from None


def decode_sample(raw: dict, where: str) -> Episode:
    """A sample read from a shard -> an `Episode` window whose `meta` is the sample's json.
    `where` names the shard (and the key is added) in errors."""
    where = f"{where}: sample {raw.get('__key__', '?')}"
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DatasetError(f"{where}: missing {', '.join(missing)} (has {', '.join(k for k in raw if k[0] != '_')})")
    try:
        meta = json.loads(raw["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{where}: json is not valid JSON ({error})") from None
    for field in ("source", "episode", "start", "fps", "action_space"):
        if field not in meta:
            raise DatasetError(f"{where}: json has no {field!r} field")
    space = ActionSpace.parse(meta["action_space"], f"{where}: json.action_space")
    frames = _array(raw, "frames.npy", where)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DatasetError(f"{where}: frames.npy must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    actions = space.check(_array(raw, "actions.npy", where), f"{where}: actions.npy")
    state = _array(raw, "state.npy", where) if "state.npy" in raw else None
    reward = _array(raw, "reward.npy", where) if "reward.npy" in raw else None
    info = None
    if "info.json" in raw:
        try:
            info = json.loads(raw["info.json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{where}: info.json is not valid JSON ({error})") from None
        if not isinstance(info, list):
            raise DatasetError(f"{where}: info.json must be a list of one dict per frame")
    for name, array in (("actions.npy", actions), ("state.npy", state), ("reward.npy", reward), ("info.json", info)):
        if array is not None and len(array) != len(frames):
            raise DatasetError(f"{where}: {name} has {len(array)} rows for {len(frames)} frames")
    return Episode(meta["source"], int(meta["episode"]), frames, actions, float(meta["fps"]), space, state, meta,
                   reward, info)


def read_shard_samples(path: Path) -> Iterator[dict]:
    """Raw samples (`{"__key__", "frames.npy": bytes, ...}`) of one tar shard, in order.
    A truncated or damaged tar raises DatasetError naming the shard."""
    from webdataset.tariterators import tarfile_samples

    if not Path(path).is_file():
        raise DatasetError(f"{path}: shard missing")
    try:
        yield from tarfile_samples([{"url": str(path)}])
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise DatasetError(f"{path}: damaged or truncated shard ({type(error).__name__}: {error.args[0] if error.args else ''})") from None


def iter_windows(folder: Path, split: str) -> Iterator[Episode]:
    """Every stored window of a split, decoded, in shard order. Strict: a damaged shard raises."""
    folder = Path(folder)
    for shard in read_manifest(folder).shards_of(split):
        for raw in read_shard_samples(folder / shard.name):
            yield decode_sample(raw, str(folder / shard.name))


def iter_episodes(folder: Path, split: str) -> Iterator[Episode]:
    """The whole episodes of a split, unbatched, in episode order: frames (L, H, W, 3) uint8,
    actions (L,) or (L, A), state (L, S) or None, reward (L,) or None, info (L dicts) or None,
    meta (the first window's json, `start` 0).

    Windows are stored in order and do not overlap, so an episode is its windows concatenated;
    frames after the episode's last full window were never stored."""
    pending: list[Episode] = []
    for window in iter_windows(folder, split):
        if pending and window.episode != pending[0].episode:
            yield _join(pending)
            pending = []
        pending.append(window)
    if pending:
        yield _join(pending)


def _join(windows: list[Episode]) -> Episode:
    first = windows[0]
    expected = [w.meta["start"] for w in windows]
    if expected != [i * len(first) for i in range(len(windows))]:
        raise DatasetError(f"episode {first.episode}: windows start at {expected}, not contiguous from 0")
    state = None if first.state is None else np.concatenate([w.state for w in windows])
    reward = None if first.reward is None else np.concatenate([w.reward for w in windows])
    info = None if first.info is None else [row for w in windows for row in w.info]
    return Episode(
        first.source,
        first.episode,
        np.concatenate([w.frames for w in windows]),
        np.concatenate([w.actions for w in windows]),
        first.fps,
        first.action_space,
        state,
        {**first.meta, "start": 0},
        reward,
        info,
    )
