"""Realism: how close a frame is to a frame the simulator itself would draw.

A frame is read for its objects, then drawn again by the simulator's own `World.render` with the
episode's background, ball colours and radii (the episode's `World`, re-created from the dataset's
seed and the episode's index) and the objects where they were read; realism is the PSNR between the
frame and that redraw. It needs no true future: a sharp frame of this world scores high wherever its
objects are, while blur, noise, a half-erased ball or a ghost of two positions cannot be redrawn and
score low. The recorded frames score the same way (the ceiling), and so does copy-last-frame (a
real frame: at the ceiling, however wrong its objects' positions).

Reading a frame: each pixel goes to whichever is nearest in colour, the background under it, the
white agent or a ball's colour (so balls of similar colours, which `objects.locate` does not tell
apart, are still each read); an object is the largest 8-connected group of its pixels, missing when
it has none (a missing object is not redrawn). The object's position
is then fitted to its pixels: among centres within half a pixel of the group's centre of mass in
1/8 pixel steps, then within a quarter pixel of the best in 1/32 steps, the one whose disc (or
square) as the simulator rasterises it best matches the group (pixels of other objects do not count:
they may cover it). Recorded frames are then redrawn exactly but for about 1 in 400 (a ball whose
visible part fits some other centre better), whose redraw is a pixel off.

Per step, realism is the PSNR of the mean squared error over clips, `10 log10(255^2 / mean MSE)` on
0..255 pixels (the same scale as `metrics.psnr`; a mean of per-frame PSNRs would be ruled by the
exact redraws, each infinite), capped at `REALISM_MAX_DB`, 48.13 dB: a root mean squared error of one
uint8 level, below which a frame is the simulator's picture. Recorded frames and copy-last-frame sit at
the cap (uncapped they would swing between infinity and ~50 dB with the odd pixel-off redraw).
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np

from worldforge.data.config import SimulatorConfig
from worldforge.data.episode import Episode
from worldforge.data.sources.simulator import AGENT_COLOR, AGENT_HALF, BALL_RADIUS, World, record_episode
from worldforge.evaluation.metrics import per_step
from worldforge.evaluation.objects import Scene, as_pixels, centre, compact_balls, largest_blob

log = logging.getLogger(__name__)

REALISM_MAX_DB = 20 * math.log10(255.0)  # 48.13: an RMS error of one uint8 level
OFF_FRAME = np.array([2.0, 2.0])  # where a missing agent is put: render's slices there are empty
COARSE = np.arange(-4, 5) / 8  # pixels around the centre of mass: +-1/2 in 1/8 steps
FINE = np.arange(-8, 9) / 32  # pixels around the coarse pass's best: +-1/4 in 1/32 steps
CHUNK = 64  # frames fitted at once: bounds the (n, 289, S, S) candidate masks (~15 MB at 32 px)


def episode_world(data_config: dict, index: int) -> World:
    """Episode `index`'s world at its first frame, re-created from a simulator dataset's content
    config (`manifest.config`: seed, resolution, simulator) as `record_episode` draws it."""
    simulator = SimulatorConfig.model_validate(data_config.get("simulator", {}))
    seed = data_config["seed"]
    return World(data_config["resolution"], simulator.objects, np.random.default_rng([seed, index, 0]))


def replay_episode(data_config: dict, index: int, actions: np.ndarray) -> Episode:
    """Episode `index` of a simulator dataset (its content config, as `episode_world`) played again
    under `actions` ((length,) int): the same world, and what those actions make of it."""
    simulator = SimulatorConfig.model_validate(data_config.get("simulator", {}))
    return record_episode(simulator, data_config["resolution"], len(actions), data_config["seed"], index, actions)


def dataset_worlds(data_config: dict, episodes: list, where: str) -> list[World] | None:
    """The worlds of recorded `episodes` (each with `.episode` and `.frames`), or None (logged) when
    the simulator no longer draws an episode's first frame as recorded (`where`: the dataset, for the
    message): then realism cannot be scored."""
    worlds = []
    for episode in episodes:
        world = episode_world(data_config, episode.episode)
        if not np.array_equal(world.render(), episode.frames[0]):
            log.warning(
                "%s: the simulator draws episode %d's first frame otherwise than recorded (the dataset was "
                "recorded by another version of worldforge's simulator): realism is not scored",
                where,
                episode.episode,
            )
            return None
        worlds.append(world)
    return worlds


def segment(pixels: np.ndarray, world: World) -> np.ndarray:
    """(T, H, W, 3) 0..255 -> (T, H, W) int: 0 where the background is nearest in colour, 1 the
    agent, 2 + k ball k."""
    colors = np.asarray([AGENT_COLOR, *world.colors], dtype=np.float32)  # (1 + K, 3)
    to_objects = ((pixels[..., None, :] - colors) ** 2).sum(-1)  # (T, H, W, 1 + K)
    to_background = ((pixels - world.background.astype(np.float32)) ** 2).sum(-1)[..., None]
    return np.argmin(np.concatenate([to_background, to_objects], axis=-1), axis=-1)


def _shape_masks(
    world: World, k: int, cx: np.ndarray, cy: np.ndarray, x0: np.ndarray, y0: np.ndarray, size: int
):
    """Pixels object k covers at candidate centres (n, C) (normalised), in windows of `size` pixels
    whose top-left pixels are (x0, y0) (n,): (n, C, size, size) bool, rasterised as `World.render`
    does (ball: pixel centres within the radius; agent: rows and columns by rounding its edges)."""
    res = world.resolution
    cols = x0[:, None, None, None] + np.arange(size)[None, None, None, :]  # (n, 1, 1, S)
    rows = y0[:, None, None, None] + np.arange(size)[None, None, :, None]  # (n, 1, S, 1)
    cx, cy = cx[..., None, None], cy[..., None, None]  # (n, C, 1, 1)
    if k == 0:
        inside_rows = (rows >= np.round((cy - AGENT_HALF) * res)) & (rows < np.round((cy + AGENT_HALF) * res))
        inside_cols = (cols >= np.round((cx - AGENT_HALF) * res)) & (cols < np.round((cx + AGENT_HALF) * res))
        return inside_rows & inside_cols
    r = world.radius[k - 1]
    return ((cols + 0.5) / res - cx) ** 2 + ((rows + 0.5) / res - cy) ** 2 <= r * r


def _fit(labels: np.ndarray, k: int, start: np.ndarray, world: World) -> np.ndarray:
    """Object k's centres (n, 2) fitted to its pixels: labels (n, H, W) from `segment`, start (n, 2)
    its groups' centres of mass, normalised. See the module docstring."""
    res = world.resolution
    size = 2 * math.ceil(max(BALL_RADIUS[1], AGENT_HALF) * res + 2)  # window: the shape and the search
    padded = np.pad(labels, ((0, 0), (size, size), (size, size)), constant_values=-1)
    x0 = np.floor(start[:, 0] * res).astype(int) - size // 2
    y0 = np.floor(start[:, 1] * res).astype(int) - size // 2
    windows = np.stack(
        [padded[i, y + size : y + 2 * size, x + size : x + 2 * size] for i, (x, y) in enumerate(zip(x0, y0))]
    )  # (n, S, S)
    own = windows == k + 1
    counted = own | (windows == 0)  # another object's pixels may cover this one: they do not count
    best = start.copy()
    for search in (COARSE, FINE):
        dx, dy = np.meshgrid(search / res, search / res)  # (C',) each after ravel
        dx, dy = dx.ravel(), dy.ravel()
        cx, cy = best[:, :1] + dx, best[:, 1:] + dy  # (n, C)
        masks = _shape_masks(world, k, cx, cy, x0, y0, size)
        mismatch = ((masks != own[:, None]) & counted[:, None]).sum(axis=(-1, -2)).astype(np.float64)
        mismatch += 1e-3 * (dx**2 + dy**2) * res * res  # ties: the candidate nearest the start
        choice = mismatch.argmin(axis=1)
        rows = np.arange(len(best))
        best = np.stack([cx[rows, choice], cy[rows, choice]], axis=1)
    return best


def read_positions(frames: np.ndarray, world: World) -> np.ndarray:
    """Where each object is drawn in each frame (T, ...) (any layout `as_pixels` takes):
    (T, 1 + K, 2) normalised (x, y) fitted to the simulator's rasterisation, NaN where missing."""
    pixels = as_pixels(frames)
    if pixels.shape[1:3] != (world.resolution, world.resolution):
        raise ValueError(f"frames {pixels.shape[1:3]} are not the world's {world.resolution}px")
    labels = segment(pixels, world)  # (T, H, W)
    objects = 1 + len(world.radius)
    positions = np.full((len(labels), objects, 2), np.nan)
    for k in range(objects):
        for t in range(len(labels)):
            blob = largest_blob((labels[t] == k + 1).astype(np.float64))
            if blob is not None:
                positions[t, k] = centre(blob)
        found = np.flatnonzero(np.isfinite(positions[:, k, 0]))
        for chunk in range(0, len(found), CHUNK):
            frames_of = found[chunk : chunk + CHUNK]
            positions[frames_of, k] = _fit(labels[frames_of], k, positions[frames_of, k], world)
    return positions


def redraw(world: World, positions: np.ndarray) -> np.ndarray:
    """The simulator's frame of `world` with its objects at `positions` (1 + K, 2) normalised, the
    agent first; a NaN (missing) object is not drawn. (H, W, 3) uint8."""
    canvas = copy.copy(world)  # render reads only these attributes; the world itself is untouched
    drawn = np.isfinite(positions[1:]).all(axis=-1)
    canvas.pos = positions[1:][drawn]
    canvas.radius = world.radius[drawn]
    canvas.colors = [color for color, keep in zip(world.colors, drawn) if keep]
    canvas.agent = positions[0] if np.isfinite(positions[0]).all() else OFF_FRAME
    return canvas.render()


def redraws(frames: np.ndarray, world: World) -> np.ndarray:
    """The simulator's redraw of each frame of (T, ...) (any layout `as_pixels` takes): its objects
    read (`read_positions`) and drawn again in `world`. (T, H, W, 3) uint8."""
    return np.stack([redraw(world, p) for p in read_positions(frames, world)])


def render_errors(frames: np.ndarray, world: World) -> np.ndarray:
    """Per frame of (T, ...) (any layout `as_pixels` takes), the mean squared error (0..255 pixels)
    between the frame and the simulator's redraw of it: (T,) float64."""
    pixels = as_pixels(frames).astype(np.float64)
    return ((pixels - redraws(frames, world).astype(np.float64)) ** 2).mean(axis=(1, 2, 3))


def clip_errors(frames: np.ndarray, worlds: list[World]) -> np.ndarray:
    """(N, T, ...) clips, one world each -> (N, T) `render_errors`."""
    return np.stack([render_errors(clip, world) for clip, world in zip(frames, worlds)])


def realism_psnr(errors: np.ndarray) -> np.ndarray:
    """(N, T) squared errors -> (T,) PSNR in dB of the mean over clips, capped at REALISM_MAX_DB."""
    mean = np.asarray(errors, dtype=np.float64).mean(axis=0)
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(255.0**2 / mean), REALISM_MAX_DB)


def overall_psnr(errors: np.ndarray) -> float:
    """The PSNR in dB of the mean squared error over every clip and step, capped at REALISM_MAX_DB."""
    return float(realism_psnr(np.asarray(errors, dtype=np.float64).reshape(-1, 1))[0])


def realism_scores(
    frames: np.ndarray, worlds: list[World], scenes: list[Scene], scored: np.ndarray
) -> dict[str, float | list[float]]:
    """Realism and object survival of clips (N, T, ...) (any layout `as_pixels` takes), with each
    clip's world and scene (`objects.read_scene`) and scored (N, T, 1 + K) (`objects.truth_scored`:
    the objects found in the recorded frames):

    - `realism_psnr_mean`, `realism_psnr_per_step`: see the module docstring;
    - `object_survival`, `object_survival_per_step`: of the scored balls, the fraction drawn as a
      compact ball (`objects.compact_balls`); absent when no ball is scored."""
    errors = clip_errors(frames, worlds)  # (N, T)
    scores = {
        "realism_psnr_mean": overall_psnr(errors),
        "realism_psnr_per_step": [float(v) for v in realism_psnr(errors)],
    }
    balls = np.asarray(scored)[..., 1:]  # (N, T, K)
    if balls.any():
        compact = np.stack(
            [compact_balls(clip, scene, world.radius) for clip, scene, world in zip(frames, scenes, worlds)]
        )
        scores["object_survival"] = float(compact[balls].mean())
        scores["object_survival_per_step"] = per_step(np.where(balls, compact, np.nan))
    return scores
