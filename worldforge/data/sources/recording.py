"""The recording loop that every Gymnasium-API source shares (`gym.GymnasiumSource`, the Atari
source): reset with a seed, take the behaviour policy's actions, keep each frame with the action
after it, the reward on the way into it and the environment's info at it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from worldforge.data.policies import Policy

INFO_ARRAY_MAX = 64
PER_FRAME = "reward.npy (the reward on the way into the frame), info.json (the environment's info at it)"


def reset_seed(seed: int, index: int) -> int:
    """The environment's reset seed for episode `index`; the policy's rng is seeded [seed, index, 1]."""
    return int(np.random.SeedSequence([seed, index, 0]).generate_state(1)[0])


@dataclass
class Played:
    """One recorded episode, one entry per recorded frame: the frame, the action taken after it,
    the observation it shows, the reward received on the way into it (0 for the first) and the
    environment's info at it (`jsonable`)."""

    frames: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    observations: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    infos: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


def play(
    env,
    policy: Policy,
    rng: np.random.Generator,
    seed: int,
    frames: int,
    frameskip: int = 1,
    warmup_steps: int = 0,
    frame: Callable | None = None,
) -> Played:
    """Reset `env` with `seed` and record at most `frames` frames, each followed by the policy's
    action (repeated `frameskip` steps), until termination or truncation. `frame(observation)` gives
    the recorded frame (default: the observation). Empty when the episode ended during the warmup."""
    frame = frame or (lambda observation: observation)
    observation, info = env.reset(seed=seed)
    action = None
    for _ in range(warmup_steps):
        action = policy(env, observation, rng, action)
        observation, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return Played()
    played, reward, ended = Played(), 0.0, False
    while len(played) < frames and not ended:
        played.frames.append(frame(observation))
        played.observations.append(observation)
        played.rewards.append(reward)
        played.infos.append(jsonable(info))
        action = policy(env, observation, rng, action)
        played.actions.append(action)
        reward = 0.0
        for _ in range(frameskip):
            observation, step_reward, terminated, truncated, info = env.step(action)
            reward += float(step_reward)
            ended = terminated or truncated
            if ended:
                break
    return played


def jsonable(info: dict) -> dict:
    """An environment's info dict as JSON holds it: numbers, booleans and strings as they are,
    numeric arrays of up to INFO_ARRAY_MAX values as lists; anything else (objects, large arrays,
    nested dicts) is left out."""
    kept = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            kept[str(key)] = value
        elif isinstance(value, (np.ndarray, list, tuple)):
            array = np.asarray(value)
            numeric = np.issubdtype(array.dtype, np.number) or array.dtype == bool
            if numeric and array.size <= INFO_ARRAY_MAX:
                kept[str(key)] = array.tolist()
    return kept


def too_short(index: int, frames: int, window_frames: int, what: str) -> str:
    return (f"episode {index}: the {what} ended after {frames} frames, shorter than one window "
            f"(data.window_frames={window_frames})")
