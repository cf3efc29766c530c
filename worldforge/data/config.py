"""Dataset config: which source, how episodes are cut into samples and clips, how shards are written
and how the loader streams them.

Vocabulary used across `worldforge/data`:
- an *episode* is one uninterrupted run of a source (one simulator rollout, one Atari game, one
  video file): `episode_frames` frames and one action per frame;
- a *window* is a stored sample: `window_frames` consecutive frames of one episode. Episodes are
  cut into non-overlapping windows (a remainder shorter than a window is dropped), so windows can
  be put back together into episodes for evaluation;
- a *clip* is what the loader yields: `clip_frames` (T) consecutive frames of a window, starting
  every `clip_stride` frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from worldforge.core.schema import Section

SPLITS = ("train", "val", "test")


class SimulatorConfig(Section):
    """The built-in 2D world (`worldforge/data/sources/simulator.py`)."""

    objects: int = Field(3, ge=0, le=8, description="balls per episode (fixed, so the state vector has one size)")
    fps: float = Field(15.0, gt=0, description="frames per second recorded in the samples' metadata")
    action_repeat: float = Field(
        0.8, ge=0.0, lt=1.0, description="behaviour policy: probability of repeating the previous action"
    )


class AtariConfig(Section):
    """Atari games through ale-py + gymnasium (`pip install 'worldforge[atari]'`)."""

    game: str = Field("Pong", description="'Pong', 'Breakout', ... or a full gymnasium id like 'ALE/Pong-v5'")
    frameskip: int = Field(4, ge=1, description="emulator frames per recorded frame (the action is repeated)")
    sticky_actions: float = Field(0.25, ge=0.0, lt=1.0, description="ALE repeat_action_probability")
    full_action_space: bool = False
    policy: Literal["random", "sticky_random"] = "sticky_random"
    policy_repeat: float = Field(0.75, ge=0.0, lt=1.0, description="sticky_random: probability of repeating")


class GymnasiumConfig(Section):
    """Any Gymnasium environment as a world (`pip install 'worldforge[gymnasium]'`; Box2D envs need
    `worldforge[box2d]`, MuJoCo envs `worldforge[mujoco]`). Discrete actions stay integers, 1-D Box
    actions are float32 vectors (`model.action_space: continuous`, `model.action_dim`)."""

    env_id: str = Field("CartPole-v1", description="a registered id: 'CarRacing-v3', 'Reacher-v5', 'CartPole-v1', ...")
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for gymnasium.make (e.g. max_episode_steps)"
    )
    frameskip: int = Field(1, ge=1, description="environment steps per recorded frame (the action is repeated)")
    frames: Literal["render", "observation"] = Field(
        "render",
        description="render: frames from env.render() (render_mode rgb_array); observation: the observation "
        "is the frame (an (H, W, 3) uint8 image, e.g. CarRacing's)",
    )
    policy: str = Field(
        "sticky_random",
        description="random, sticky_random, or 'module:function' called as function(env, observation, rng, "
        "previous_action) -> action (rng a numpy Generator seeded per episode; previous_action None at the "
        "start), e.g. 'worldforge.data.policies:drive_track' for CarRacing",
    )
    policy_repeat: float = Field(0.8, ge=0.0, lt=1.0, description="sticky_random: probability of repeating")
    policy_scale: float = Field(
        1.0, gt=0.0, le=1.0, description="random and sticky_random: continuous actions drawn from the middle "
        "fraction of each range of the Box (0.5: half the torque range, a slower arm); discrete actions unaffected",
    )
    warmup_steps: int = Field(
        0, ge=0, description="environment steps taken with the policy after reset before recording starts "
        "(CarRacing spends its first ~50 zooming in)",
    )
    render_size: int | None = Field(
        None, ge=16, description="width and height passed to gymnasium.make (MuJoCo envs: render small, fast)"
    )


class VideoConfig(Section):
    """A folder of the user's recordings (`pip install 'worldforge[video]'`): each `NAME.mp4|webm|mkv`
    has a sibling `NAME.npy` or `NAME.jsonl` with one action per video frame."""

    folder: Path | None = Field(None, description="the folder of videos; required when source=video")
    fps: float = Field(15.0, gt=0, description="videos are resampled to this frame rate")
    crop: bool = Field(True, description="centre-crop to a square before resizing (else squash)")
    num_actions: int | None = Field(None, ge=1, description="discrete: n; default largest action + 1")


class ShardConfig(Section):
    """`webdataset.ShardWriter` limits: a new shard starts when either is reached."""

    maxcount: int = Field(64, ge=1, description="samples per shard")
    maxsize: int = Field(256 * 2**20, ge=2**16, description="bytes per shard")


class LoaderConfig(Section):
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    shuffle_buffer: int = Field(
        256, ge=1, description="clips held for shuffling, per worker; 1 = no shuffle (shards and clips in order)"
    )
    max_corrupt_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="above this fraction of a rank's shards corrupt, the loader stops"
    )
    resampled: bool = Field(
        False, description="draw shards with replacement (multi-node): every rank sees equal-length epochs"
    )
    drop_last: bool = False


class DataConfig(Section):
    """The `data` section. Defaults are the CPU quickstart: 64x64 simulator episodes, built in seconds."""

    source: Literal["simulator", "atari", "gymnasium", "video"] = "simulator"
    seed: int = 0
    name: str | None = Field(None, description="dataset folder name under <root>/datasets; default SOURCE-RESpx")
    resolution: int = Field(64, ge=32, le=256, description="frames are RESOLUTION x RESOLUTION RGB")
    episodes: int = Field(240, ge=1, description="episodes to record (video: at most this many files)")
    episode_frames: int = Field(48, ge=2, description="frames per episode (atari, gymnasium: at most; video: ignored)")
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="fraction of episodes per split; an episode belongs to exactly one split",
    )
    window_frames: int = Field(24, ge=1, description="frames per stored sample (episodes cut into windows)")
    clip_frames: int = Field(8, ge=1, description="T: frames per clip the loader yields")
    clip_stride: int = Field(4, ge=1, description="frames between the starts of consecutive clips in a window")
    simulator: SimulatorConfig = SimulatorConfig()
    atari: AtariConfig = AtariConfig()
    gymnasium: GymnasiumConfig = GymnasiumConfig()
    video: VideoConfig = VideoConfig()
    shards: ShardConfig = ShardConfig()
    loader: LoaderConfig = LoaderConfig()

    @property
    def dataset_name(self) -> str:
        return self.name or f"{self.source}-{self.resolution}px"

    @property
    def clips_per_window(self) -> int:
        return (self.window_frames - self.clip_frames) // self.clip_stride + 1

    @field_validator("splits")
    @classmethod
    def _splits_are_fractions(cls, splits: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; splits are named {', '.join(SPLITS)}")
        if any(f < 0 for f in splits.values()) or not 0.999 <= sum(splits.values()) <= 1.001:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {splits}")
        return splits

    @model_validator(mode="after")
    def _lengths_fit(self) -> DataConfig:
        if self.clip_frames > self.window_frames:
            raise ValueError(
                f"clip_frames ({self.clip_frames}) is longer than window_frames ({self.window_frames}): "
                "a clip is cut from one stored window"
            )
        if self.source != "video" and self.window_frames > self.episode_frames:
            raise ValueError(
                f"window_frames ({self.window_frames}) is longer than episode_frames ({self.episode_frames})"
            )
        return self
