"""Any Gymnasium environment as a world (`pip install 'worldforge[gymnasium]'`, plus
`worldforge[box2d]` for CarRacing and the other Box2D envs, `worldforge[mujoco]` for MuJoCo's).

An episode is one run from `reset` until termination, truncation or `episode_frames` recorded
frames, after `warmup_steps` unrecorded steps. Each recorded frame is followed by the action the
behaviour policy chose (`worldforge/data/policies.py`), repeated for `frameskip` environment steps;
the frame they lead to is the next recorded one. Frames come from `render()` (render_mode
rgb_array) or are the image observations, resized (squashed, bilinear) to the configured square
resolution. Discrete action spaces give int64 actions, 1-D Box spaces float32 vectors (clipped to
the space, as the environment received them).

State: when the observation is a flat vector (CartPole, Reacher, Pendulum, ...) it is stored per
recorded frame as the clip's `state.npy`; `describe()` says it is the environment's observation,
not the simulator's agent/ball layout (evaluation reads that layout only from simulator datasets).
Every clip also stores `reward.npy`, the reward received on the way into each frame (summed over
the frameskip; 0 for the first), and `info.json`, the environment's `info` at each frame (from the
step that led to it; the reset's, or the last warmup step's, for the first), reduced to what JSON
holds by `recording.jsonable` (Atari's `lives`, Reacher's `reward_dist`, CarRacing's
`lap_finished`).

Determinism: the environment's reset and the policy's rng are seeded from (seed, episode).
"""

from __future__ import annotations

import os

import numpy as np

from worldforge.data.config import DataConfig
from worldforge.data.episode import ActionSpace, DatasetError, Episode, resize_frames
from worldforge.data.policies import make_policy
from worldforge.data.sources.recording import PER_FRAME, play, reset_seed, too_short

STATE_LAYOUT = "the environment's observation vector (gymnasium observation_space), per recorded frame"
# What gymnasium's DependencyNotInstalled names -> the worldforge extra that installs it.
EXTRAS = {"box2d": "box2d", "mujoco": "mujoco", "pygame": "gymnasium"}


class GymnasiumSource:
    name = "gymnasium"

    def __init__(self, config: DataConfig):
        gym = config.gymnasium
        # MuJoCo picks its GL backend when imported (at make): headless EGL unless the user chose one.
        os.environ.setdefault("MUJOCO_GL", "egl")
        try:
            import gymnasium
        except ImportError as error:
            raise DatasetError(
                f"data.source=gymnasium needs gymnasium ({error}); install it with pip install 'worldforge[gymnasium]'"
            ) from None
        self.config = config
        kwargs = dict(gym.env_kwargs)
        if gym.frames == "render":
            kwargs["render_mode"] = "rgb_array"
        if gym.render_size is not None:
            kwargs.update(width=gym.render_size, height=gym.render_size)
        try:
            self.env = gymnasium.make(gym.env_id, **kwargs)
        except gymnasium.error.DependencyNotInstalled as error:
            extra = next((e for name, e in EXTRAS.items() if name in str(error).lower()), "gymnasium")
            raise DatasetError(
                f"data.gymnasium.env_id: {gym.env_id!r} needs a library that is not installed ({error}); "
                f"install it with pip install 'worldforge[{extra}]'"
            ) from None
        except Exception as error:  # noqa: BLE001 - gymnasium raises several types for unknown ids/kwargs
            raise DatasetError(f"data.gymnasium.env_id: cannot make {gym.env_id!r}: {error}") from None
        self.action_space = gym_action_space(self.env.action_space, gym.env_id)
        self.policy = make_policy(gym.policy, gym.policy_repeat, "data.gymnasium.policy", gym.policy_scale)
        space = self.env.observation_space
        self.has_state = len(space.shape or ()) == 1 and np.issubdtype(space.dtype, np.number)
        self.fps = float(self.env.metadata.get("render_fps") or 30) / gym.frameskip
        self.problems: list[str] = []

    def available(self, wanted: int) -> int:
        return wanted

    def episode(self, index: int) -> Episode | None:
        data, gym = self.config, self.config.gymnasium
        rng = np.random.default_rng([data.seed, index, 1])
        played = play(
            self.env, self.act, rng, reset_seed(data.seed, index), data.episode_frames,
            gym.frameskip, gym.warmup_steps, self.frame,
        )
        if len(played) < data.window_frames:
            self.problems.append(too_short(index, len(played), data.window_frames, "environment"))
            return None
        resized = resize_frames(np.stack(played.frames), data.resolution, crop=False)  # (L, R, R, 3)
        if self.action_space.kind == "discrete":
            actions = np.asarray(played.actions, dtype=np.int64)  # (L,)
        else:
            actions = np.stack(played.actions).astype(np.float32)  # (L, A)
        state = np.stack(played.observations).astype(np.float32) if self.has_state else None  # (L, S)
        return Episode("gymnasium", index, resized, actions, self.fps, self.action_space, state,
                       meta={"env_id": gym.env_id}, reward=np.asarray(played.rewards, dtype=np.float32),
                       info=played.infos)

    def act(self, env, observation, rng: np.random.Generator, previous_action):
        """The configured policy's action, as the environment takes it: an int, or a float32 vector
        clipped to the Box."""
        action = self.policy(env, observation, rng, previous_action)
        if self.action_space.kind == "discrete":
            return int(action)
        space = env.action_space
        action = np.asarray(action, dtype=np.float32).reshape(space.shape)
        return np.clip(action, space.low, space.high)

    def frame(self, observation) -> np.ndarray:
        """The recorded picture (H, W, 3) uint8: the render, or the observation itself."""
        gym = self.config.gymnasium
        if gym.frames == "observation":
            picture = np.asarray(observation)
            if picture.ndim != 3 or picture.shape[-1] != 3 or picture.dtype != np.uint8:
                raise DatasetError(
                    f"data.gymnasium.frames=observation: {gym.env_id!r} observations are {picture.dtype} "
                    f"{picture.shape}, not (H, W, 3) uint8 images; use frames: render"
                )
            return picture
        try:
            return np.asarray(self.env.render())
        except Exception as error:  # noqa: BLE001 - GL backends fail in many ways
            raise DatasetError(
                f"data.gymnasium.env_id: {gym.env_id!r} cannot render ({type(error).__name__}: {error}). "
                f"MuJoCo renders headless with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: install Debian's libegl1 "
                "(EGL) or libosmesa6 with MUJOCO_GL=osmesa (make gl)"
            ) from None

    def describe(self) -> dict:
        gym = self.config.gymnasium
        info = {"env_id": gym.env_id, "frameskip": gym.frameskip, "frames": gym.frames, "policy": gym.policy,
                "per_frame": PER_FRAME}
        if self.has_state:
            size = self.env.observation_space.shape[0]
            info |= {"state_fields": [f"observation{i}" for i in range(size)], "state_layout": STATE_LAYOUT}
        return info

    def close(self) -> None:
        self.env.close()


def gym_action_space(space, env_id: str) -> ActionSpace:
    """Discrete(n) -> discrete n; a 1-D Box -> continuous dim; anything else is a DatasetError."""
    import gymnasium

    if isinstance(space, gymnasium.spaces.Discrete):
        if space.start != 0:
            raise DatasetError(f"data.gymnasium.env_id: {env_id!r} has actions {space}; worldforge needs them from 0")
        return ActionSpace(kind="discrete", n=int(space.n))
    if isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 1:
        return ActionSpace(kind="continuous", dim=int(space.shape[0]))
    raise DatasetError(
        f"data.gymnasium.env_id: {env_id!r} has the action space {space}; worldforge records Discrete "
        "or 1-D Box actions"
    )
