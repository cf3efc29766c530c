"""Behaviour policies that record Gymnasium and Atari episodes.

A policy is called once per recorded frame as `policy(env, observation, rng, previous_action) ->
action`: `env` the gymnasium environment, `observation` what the last step (or reset) returned,
`rng` a `numpy.random.Generator` seeded from (data.seed, episode), `previous_action` the action of
the previous frame (None at the start of an episode). Discrete actions are ints, continuous ones
float vectors of the action space's size. `data.gymnasium.policy` names `random`, `sticky_random`
or a user's `module:function` with that signature, e.g. `drive_track` below.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from worldforge.data.episode import DatasetError

Policy = Callable[[Any, Any, np.random.Generator, Any], Any]


def random_action(space, rng: np.random.Generator, scale: float = 1.0):
    """A uniform draw from a Discrete (int) or a Box (float32 vector; unbounded sides drawn in
    [-1, 1]), the Box shrunk toward its centre by `scale` (0.5: the middle half of each range)."""
    if hasattr(space, "n"):
        return int(rng.integers(space.n))
    low = np.where(np.isfinite(space.low), space.low, -1.0)
    high = np.where(np.isfinite(space.high), space.high, 1.0)
    if scale != 1.0:
        centre, half = (low + high) / 2, (high - low) / 2
        low, high = centre - scale * half, centre + scale * half
    return rng.uniform(low, high).astype(np.float32)


def random_policy(scale: float = 1.0) -> Policy:
    """A fresh uniform action every frame (`random_action`)."""

    def policy(env, observation, rng: np.random.Generator, previous_action):
        return random_action(env.action_space, rng, scale)

    return policy


def sticky_random(repeat: float, scale: float = 1.0) -> Policy:
    """Repeat the previous action with probability `repeat`, else draw a new one uniformly
    (`random_action`, Box actions shrunk by `scale`)."""

    def policy(env, observation, rng: np.random.Generator, previous_action):
        if previous_action is None:
            previous_action = random_action(env.action_space, rng, scale)
        if rng.random() >= repeat:
            return random_action(env.action_space, rng, scale)
        return previous_action

    return policy


def make_policy(spec: str, repeat: float, field: str, scale: float = 1.0) -> Policy:
    """`random`, `sticky_random` (repeat probability `repeat`; both draw Box actions shrunk toward
    the centre by `scale`) or `module:function`; a spec that cannot be loaded is a DatasetError
    naming `field`."""
    if spec == "random":
        return random_policy(scale)
    if spec == "sticky_random":
        return sticky_random(repeat, scale)
    module_name, colon, function_name = spec.partition(":")
    if not colon or not module_name or not function_name:
        raise DatasetError(f"{field}: {spec!r} is not random, sticky_random or 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise DatasetError(f"{field}: cannot import module {module_name!r} of {spec!r} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise DatasetError(f"{field}: module {module_name!r} has no function {function_name!r}")
    return function


# CarRacing: follow the track from the environment's own geometry, with noise so that the recorded
# actions vary (a world model learns what steering does only from episodes where it varies).
LOOKAHEAD_TILES = 6
TARGET_SPEED = 45.0  # track units per second (random actions leave the track at once; full gas spins out)
PERTURB_PROB = 0.15  # a frame's steering drawn uniformly instead of from the track


def drive_track(env, observation, rng: np.random.Generator, previous_action) -> np.ndarray:
    """CarRacing-v3: steer toward the track tile `LOOKAHEAD_TILES` ahead of the nearest one, gas
    toward `TARGET_SPEED`; gaussian noise on every action and, with probability `PERTURB_PROB`, a
    uniformly random steer. Returns (steer in [-1, 1], gas in [0, 1], brake in [0, 1])."""
    car = env.unwrapped.car.hull
    track = np.asarray(env.unwrapped.track)[:, 2:4]  # (tiles, 2) x, y of each tile's centre
    x, y = car.position
    nearest = int(np.argmin(((track - (x, y)) ** 2).sum(axis=1)))
    tx, ty = track[(nearest + LOOKAHEAD_TILES) % len(track)]
    # The hull's angle 0 points along +y; a positive steer turns right (clockwise).
    heading = car.angle + math.pi / 2
    error = math.atan2(ty - y, tx - x) - heading
    error = (error + math.pi) % (2 * math.pi) - math.pi
    steer = -2.0 * error + rng.normal(0.0, 0.2)
    if rng.random() < PERTURB_PROB:
        steer = rng.uniform(-1.0, 1.0)
    speed = float(np.hypot(*car.linearVelocity))
    gas = (0.3 if speed < TARGET_SPEED else 0.0) + rng.uniform(0.0, 0.2)
    brake = rng.uniform(0.2, 0.6) if speed > TARGET_SPEED * 1.3 else 0.0
    return np.clip(np.array([steer, gas, brake], dtype=np.float32), [-1.0, 0.0, 0.0], 1.0)
