"""A folder of the user's own recordings (`pip install 'worldforge[video]'`, PyAV).

Layout: `FOLDER/NAME.mp4|webm|mkv`, each with a sibling actions file holding one action per video
frame, in the video's own frame rate:
- `NAME.npy`: int array (N,) for discrete actions or float array (N, A) for continuous ones;
- `NAME.jsonl`: one line per frame, either the bare action (`3`, `[0.1, -0.2]`) or `{"action": ...}`.

Each video is one episode, resampled to `data.video.fps`: output frame k is the last video frame
shown at time k / fps, and its action is that video frame's action. Frames are centre-cropped to a
square (or squashed, `crop: false`) and resized to the configured resolution. Discrete action
spaces have n = the largest action in any file + 1 unless `data.video.num_actions` is set.

Videos without an actions file, with a different number of actions than frames, or with actions
of another kind than the rest are skipped and reported one by one in `problems`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worldforge.data.config import DataConfig
from worldforge.data.episode import ActionSpace, DatasetError, Episode, resize_frames

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv")
ACTION_SUFFIXES = (".npy", ".jsonl")


def read_actions(path: Path) -> np.ndarray:
    """(N,) int64 or (N, A) float32 from a `.npy` or `.jsonl` actions file; DatasetError names the line."""
    if path.suffix == ".npy":
        try:
            actions = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: not a readable .npy array ({error})") from None
    else:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not valid JSON ({error})") from None
            rows.append(value["action"] if isinstance(value, dict) and "action" in value else value)
        actions = np.asarray(rows)
    if actions.ndim == 1 and np.issubdtype(actions.dtype, np.integer):
        return actions.astype(np.int64)
    if actions.ndim == 2 and np.issubdtype(actions.dtype, np.number):
        return actions.astype(np.float32)
    raise DatasetError(f"{path}: actions must be integers (N,) or numbers (N, A), got {actions.dtype} {actions.shape}")


def decode_video(path: Path, fps: float, size: int, crop: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Resample a video to `fps`: returns frames (L, size, size, 3) uint8, the index of the video
    frame each came from (L,), and the number of frames in the video."""
    import av

    times, images = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            times.append(float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate))
            # resized as decoded: a long high-resolution video never sits in memory at full size
            images.append(resize_frames(frame.to_ndarray(format="rgb24")[None], size, crop)[0])
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), 0
    times = np.asarray(times) - times[0]
    targets = np.arange(0.0, times[-1] + 1e-6, 1.0 / fps)
    chosen = np.searchsorted(times, targets + 1e-6, side="right") - 1  # last frame shown at each target time
    return np.stack([images[i] for i in chosen]), chosen, len(images)


class VideoSource:
    name = "video"

    def __init__(self, config: DataConfig):
        try:
            import av  # noqa: F401
        except ImportError as error:
            raise DatasetError(
                f"data.source=video needs PyAV ({error}); install it with pip install 'worldforge[video]'"
            ) from None
        folder = config.video.folder
        if folder is None or not Path(folder).is_dir():
            raise DatasetError(f"data.video.folder: {folder!r} is not a folder of videos (required for source=video)")
        self.config = config
        self.fps = config.video.fps
        self.problems: list[str] = []
        self.videos: list[tuple[Path, Path]] = []
        self.actions: dict[Path, np.ndarray] = {}
        for video in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
            siblings = [video.with_suffix(s) for s in ACTION_SUFFIXES if video.with_suffix(s).is_file()]
            if not siblings:
                self.problems.append(f"{video.name}: no actions file ({video.stem}.npy or {video.stem}.jsonl)")
                continue
            try:
                self.actions[video] = read_actions(siblings[0])
            except DatasetError as error:
                self.problems.append(f"{video.name}: {error}")
                continue
            self.videos.append((video, siblings[0]))
        self.action_space = self._infer_action_space()
        if not self.videos:
            raise DatasetError(
                f"data.video.folder {folder}: no usable video (*.mp4|*.webm|*.mkv with a sibling .npy or .jsonl "
                f"actions file); problems: {'; '.join(self.problems) or 'the folder has no videos'}"
            )

    def _infer_action_space(self) -> ActionSpace:
        """The kind most files have; files of the other kind are reported and dropped."""
        discrete = [v for v, _ in self.videos if self.actions[v].ndim == 1]
        kind = "discrete" if len(discrete) * 2 >= len(self.videos) else "continuous"
        keep = []
        for video, actions_file in self.videos:
            actions = self.actions[video]
            if (actions.ndim == 1) != (kind == "discrete"):
                self.problems.append(f"{video.name}: {actions_file.name} holds {'discrete' if actions.ndim == 1 else 'continuous'} "
                                     f"actions but most files hold {kind} ones")
            elif kind == "continuous" and keep and actions.shape[1] != self.actions[keep[0][0]].shape[1]:
                self.problems.append(f"{video.name}: {actions_file.name} has action vectors of size {actions.shape[1]}, "
                                     f"others {self.actions[keep[0][0]].shape[1]}")
            else:
                keep.append((video, actions_file))
        self.videos = keep
        if not keep:
            return ActionSpace(kind="discrete", n=1)
        if kind == "continuous":
            return ActionSpace(kind="continuous", dim=int(self.actions[keep[0][0]].shape[1]))
        largest = max(int(self.actions[v].max(initial=0)) for v, _ in keep)
        n = self.config.video.num_actions or largest + 1
        if largest >= n:
            raise DatasetError(f"data.video.num_actions={n} but the actions files hold action {largest}")
        return ActionSpace(kind="discrete", n=n)

    def available(self, wanted: int) -> int:
        return min(wanted, len(self.videos))

    def episode(self, index: int) -> Episode | None:
        video, actions_file = self.videos[index]
        data = self.config
        try:
            frames, chosen, count = decode_video(video, self.fps, data.resolution, data.video.crop)
        except Exception as error:  # noqa: BLE001 - PyAV raises its own error tree for damaged files
            self.problems.append(f"{video.name}: cannot decode ({error})")
            return None
        actions = self.actions[video]
        if len(actions) != count:
            self.problems.append(f"{video.name}: {count} frames but {actions_file.name} has {len(actions)} actions")
            return None
        if len(frames) < data.window_frames:
            self.problems.append(f"{video.name}: {len(frames)} frames at {self.fps} fps, shorter than one window "
                                 f"(data.window_frames={data.window_frames})")
            return None
        return Episode("video", index, frames, actions[chosen], self.fps, self.action_space, meta={"file": video.name})

    def describe(self) -> dict:
        return {"folder": str(self.config.video.folder), "videos": [v.name for v, _ in self.videos]}

    def close(self) -> None:
        pass
