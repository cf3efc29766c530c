"""The built-in world: a 2D box with an agent moved by discrete actions and balls under simple physics.

Why these dynamics: a world model should have something real to learn. Actions matter (they
accelerate the agent and kick nearby balls), and one frame does not tell the future: the agent and
the balls keep their momentum, so velocities must be inferred from earlier frames.

- Coordinates are normalised: x to the right and y downwards, both in [0, 1] over the whole frame;
  velocities are in those units per frame. Physics does not depend on the resolution.
- Agent: a white square (`AGENT_COLOR`), the only white in any frame (backgrounds are dark, balls
  are saturated), so it can be found in generated frames (`agent_position_from_frames`). Actions
  accelerate it; friction slows it; walls stop it.
- Balls: coloured discs with their own mass (~ area), per-episode gravity (often zero) and wall
  restitution; they bounce off walls, off each other (elastic) and off the agent (which is
  immovable to them). `push` kicks every ball within `PUSH_RADIUS` of the agent away from it.
- Each episode draws its own background (flat, gradient, checker or stripes) and ball colours.
- The behaviour policy is sticky-random: repeat the previous action with probability
  `action_repeat`, else draw uniformly.

Ground-truth state per frame, float32 `(S,)` with `S = 4 + 4 * objects`, laid out as
`STATE_LAYOUT` / `state_fields(objects)`: agent x, y, vx, vy, then x, y, vx, vy of each ball.
"""

from __future__ import annotations

import math

import numpy as np

from worldforge.data.config import DataConfig, SimulatorConfig
from worldforge.data.episode import ActionSpace, Episode

ACTIONS = ("noop", "up", "down", "left", "right", "push")
ACTION_SPACE = ActionSpace(kind="discrete", n=len(ACTIONS), names=list(ACTIONS))
MOVES = {1: (0.0, -1.0), 2: (0.0, 1.0), 3: (-1.0, 0.0), 4: (1.0, 0.0)}

STATE_LAYOUT = "agent x, y, vx, vy then, per ball, x, y, vx, vy; normalised [0, 1] coords, y down, per frame"
AGENT_COLOR = (255, 255, 255)
AGENT_THRESHOLD = 190  # a pixel is agent when its darkest channel is above this (others stay <= 120)

AGENT_HALF = 0.06  # half side of the agent square
AGENT_ACCEL = 0.01
AGENT_FRICTION = 0.85
PUSH_RADIUS = 0.22
PUSH_SPEED = 0.045
BALL_RADIUS = (0.04, 0.07)
BALL_MAX_SPEED = 0.05  # below the smallest radius, so balls do not tunnel through each other
BACKGROUNDS = ("flat", "vertical", "horizontal", "checker", "stripes")


def state_fields(objects: int) -> list[str]:
    names = ["agent_x", "agent_y", "agent_vx", "agent_vy"]
    for i in range(objects):
        names += [f"ball{i}_x", f"ball{i}_y", f"ball{i}_vx", f"ball{i}_vy"]
    return names


class World:
    """One episode's world. `step(action)` advances one frame, `render()` draws the current one."""

    def __init__(self, resolution: int, objects: int, rng: np.random.Generator):
        self.resolution = resolution
        self.agent = rng.uniform(AGENT_HALF, 1 - AGENT_HALF, size=2)
        self.agent_v = np.zeros(2)
        self.radius = rng.uniform(*BALL_RADIUS, size=objects)
        self.mass = self.radius**2
        self.pos = np.stack([rng.uniform(r, 1 - r, size=2) for r in self.radius]) if objects else np.zeros((0, 2))
        self.vel = rng.uniform(-0.03, 0.03, size=(objects, 2))
        self.gravity = 0.0 if rng.random() < 0.5 else rng.uniform(0.0005, 0.0015)
        self.restitution = rng.uniform(0.8, 1.0)
        self.colors = [_ball_color(rng) for _ in range(objects)]
        self.background_kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        self.background = _background(self.background_kind, resolution, rng)  # (R, R, 3) uint8
        # pixel-centre coordinates, for drawing discs
        self.pixel_centres = (np.arange(resolution) + 0.5) / resolution

    def state(self) -> np.ndarray:
        """(4 + 4 * objects,) float32, see STATE_LAYOUT."""
        balls = np.concatenate([self.pos, self.vel], axis=1).ravel()
        return np.concatenate([self.agent, self.agent_v, balls]).astype(np.float32)

    def step(self, action: int) -> None:
        if action in MOVES:
            self.agent_v += AGENT_ACCEL * np.asarray(MOVES[action])
        self.agent_v *= AGENT_FRICTION
        self.agent += self.agent_v
        for axis in range(2):  # walls stop the agent
            if not AGENT_HALF <= self.agent[axis] <= 1 - AGENT_HALF:
                self.agent[axis] = min(max(self.agent[axis], AGENT_HALF), 1 - AGENT_HALF)
                self.agent_v[axis] = 0.0
        if action == 5:
            self._push()
        self.vel[:, 1] += self.gravity
        speed = np.linalg.norm(self.vel, axis=1, keepdims=True)
        self.vel *= np.minimum(1.0, BALL_MAX_SPEED / np.maximum(speed, 1e-9))
        self.pos += self.vel
        self._bounce_walls()
        self._collide_balls()
        self._collide_agent()

    def _push(self) -> None:
        offset = self.pos - self.agent  # (N, 2)
        distance = np.linalg.norm(offset, axis=1)
        near = distance < PUSH_RADIUS
        direction = offset[near] / np.maximum(distance[near, None], 1e-6)
        self.vel[near] += PUSH_SPEED * direction

    def _bounce_walls(self) -> None:
        r = self.radius[:, None]
        low, high = self.pos < r, self.pos > 1 - r
        self.pos = np.where(low, r, np.where(high, 1 - r, self.pos))
        self.vel = np.where(low, np.abs(self.vel), np.where(high, -np.abs(self.vel), self.vel))
        self.vel[low | high] *= self.restitution

    def _collide_balls(self) -> None:
        n = len(self.radius)
        for i in range(n):
            for j in range(i + 1, n):
                offset = self.pos[j] - self.pos[i]
                distance = math.hypot(offset[0], offset[1])
                overlap = self.radius[i] + self.radius[j] - distance
                if overlap <= 0 or distance < 1e-9:
                    continue
                normal = offset / distance
                mi, mj = self.mass[i], self.mass[j]
                self.pos[i] -= normal * overlap * mj / (mi + mj)
                self.pos[j] += normal * overlap * mi / (mi + mj)
                approach = float(np.dot(self.vel[i] - self.vel[j], normal))
                if approach > 0:  # elastic exchange along the normal
                    self.vel[i] -= 2 * mj / (mi + mj) * approach * normal
                    self.vel[j] += 2 * mi / (mi + mj) * approach * normal

    def _collide_agent(self) -> None:
        low, high = self.agent - AGENT_HALF, self.agent + AGENT_HALF
        for i in range(len(self.radius)):
            closest = np.clip(self.pos[i], low, high)
            offset = self.pos[i] - closest
            distance = math.hypot(offset[0], offset[1])
            if distance >= self.radius[i]:
                continue
            if distance < 1e-9:  # centre inside the agent: leave along the line between centres
                offset = self.pos[i] - self.agent + 1e-6
                distance = math.hypot(offset[0], offset[1])
            normal = offset / distance
            self.pos[i] = closest + normal * self.radius[i]
            approach = float(np.dot(self.vel[i] - self.agent_v, normal))
            if approach < 0:
                self.vel[i] -= (1 + self.restitution) * approach * normal

    def render(self) -> np.ndarray:
        """(R, R, 3) uint8: background, balls, then the agent on top (always visible)."""
        size = self.resolution
        frame = self.background.copy()
        centres = self.pixel_centres
        for (x, y), r, color in zip(self.pos, self.radius, self.colors):
            x0, x1 = max(int((x - r) * size), 0), min(int((x + r) * size) + 1, size)
            y0, y1 = max(int((y - r) * size), 0), min(int((y + r) * size) + 1, size)
            disc = (centres[None, x0:x1] - x) ** 2 + (centres[y0:y1, None] - y) ** 2 <= r * r
            frame[y0:y1, x0:x1][disc] = color
        (ax, ay), half = self.agent, AGENT_HALF
        frame[round((ay - half) * size) : round((ay + half) * size), round((ax - half) * size) : round((ax + half) * size)] = (
            AGENT_COLOR
        )
        return frame


def _ball_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """Saturated and bright: at least one channel <= 102, so never mistaken for the white agent."""
    hue, saturation, value = rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(int(c) for c in np.round(rgb * 255))


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8, every channel <= 120 (dark enough to keep the agent unique)."""
    a, b = rng.uniform(0, 120, size=3), rng.uniform(0, 120, size=3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    if kind == "flat":
        image = np.broadcast_to(a, (size, size, 3))
    elif kind == "vertical":
        image = np.broadcast_to(a + (b - a) * ramp, (size, size, 3))
    elif kind == "horizontal":
        image = np.broadcast_to(a + (b - a) * ramp.transpose(1, 0, 2), (size, size, 3))
    else:
        cell = max(size // int(rng.integers(4, 9)), 2)
        rows, cols = np.indices((size, size)) // cell
        pattern = (rows + cols) % 2 if kind == "checker" else cols % 2
        image = np.where(pattern[..., None] == 1, b, a)
    return np.ascontiguousarray(np.round(image).astype(np.uint8))


def record_episode(
    config: SimulatorConfig,
    resolution: int,
    length: int,
    seed: int,
    index: int,
    actions: np.ndarray | None = None,
) -> Episode:
    """Episode `index` of the simulator at `seed`: deterministic. The world is drawn from
    (seed, index) alone, so replaying it with other `actions` ((length,) int) changes only what the
    actions change; without `actions` the sticky-random behaviour policy chooses them."""
    world = World(resolution, config.objects, np.random.default_rng([seed, index, 0]))
    if actions is None:
        actions = sticky_random_actions(length, config.action_repeat, np.random.default_rng([seed, index, 1]))
    actions = ACTION_SPACE.check(np.asarray(actions), f"simulator episode {index} actions")
    if len(actions) != length:
        raise ValueError(f"simulator episode {index}: {len(actions)} actions for {length} frames")
    frames = np.empty((length, resolution, resolution, 3), dtype=np.uint8)
    state = np.empty((length, 4 + 4 * config.objects), dtype=np.float32)
    for t in range(length):
        frames[t], state[t] = world.render(), world.state()
        world.step(int(actions[t]))  # action t leads to frame t + 1
    meta = {"background": world.background_kind, "gravity": round(float(world.gravity), 6)}
    return Episode("simulator", index, frames, actions, config.fps, ACTION_SPACE, state, meta)


def sticky_random_actions(
    length: int, repeat: float, rng: np.random.Generator, previous: int | None = None
) -> np.ndarray:
    """The behaviour policy: `length` actions (int64), each the one before it with probability
    `repeat`, else drawn uniformly. `previous`: the action before the first (a policy continued
    past recorded actions); None: the first is drawn. The whole sequence at once, its draws in the
    order every recorded dataset made them (`data.policies.sticky_random` is the same rule as a
    per-step Gymnasium policy)."""
    draws = rng.integers(len(ACTIONS), size=length)
    keep = rng.random(length) < repeat
    actions = np.empty(length, dtype=np.int64)
    for t in range(length):
        before = actions[t - 1] if t > 0 else previous
        actions[t] = before if before is not None and keep[t] else draws[t]
    return actions


def agent_position_from_frames(frames: np.ndarray, threshold: int = AGENT_THRESHOLD) -> np.ndarray:
    """Where the agent is in each frame, in the state's normalised (x, y) coordinates.

    frames: (T, H, W, 3) uint8, or float in [-1, 1] laid out (T, H, W, 3) or (T, 3, H, W) (model
    output). Returns (T, 2) float32: the centroid of the pixels whose darkest channel is above
    `threshold` (the white agent), NaN where no pixel is.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames must be (T, H, W, 3) or (T, 3, H, W), got shape {frames.shape}")
    if frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
    if frames.dtype != np.uint8:
        frames = np.clip((frames.astype(np.float32) + 1) * 127.5, 0, 255)
    mask = frames.min(axis=-1) > threshold  # (T, H, W)
    height, width = mask.shape[1:]
    count = mask.sum(axis=(1, 2)).astype(np.float32)
    ys = (mask.sum(axis=2) * (np.arange(height) + 0.5)).sum(axis=1) / height
    xs = (mask.sum(axis=1) * (np.arange(width) + 0.5)).sum(axis=1) / width
    with np.errstate(invalid="ignore", divide="ignore"):
        position = np.stack([xs / count, ys / count], axis=1)
    return position.astype(np.float32)


class SimulatorSource:
    """The simulator as a dataset source: episode `index` is `record_episode(..., index)`."""

    name = "simulator"

    def __init__(self, config: DataConfig):
        self.config = config
        self.action_space = ACTION_SPACE
        self.fps = config.simulator.fps
        self.problems: list[str] = []

    def available(self, wanted: int) -> int:
        return wanted

    def episode(self, index: int) -> Episode:
        data = self.config
        return record_episode(data.simulator, data.resolution, data.episode_frames, data.seed, index)

    def describe(self) -> dict:
        return {"state_fields": state_fields(self.config.simulator.objects), "state_layout": STATE_LAYOUT,
                "agent_color": list(AGENT_COLOR)}

    def close(self) -> None:
        pass
