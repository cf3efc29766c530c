"""Realism and object survival: frames of a hand-made world (the simulator's own drawing of objects
placed by hand), spoiled the ways a rollout spoils them, and recorded simulator episodes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from worldforge.data.config import SimulatorConfig
from worldforge.data.sources.simulator import World, record_episode
from worldforge.evaluation.objects import compact_agent, compact_balls, read_scene
from worldforge.evaluation.realism import (
    REALISM_MAX_DB,
    episode_world,
    read_positions,
    realism_psnr,
    realism_scores,
    redraw,
    render_errors,
    replay_episode,
)

SIZE = 32
AGENT = (0.2, 0.75)
BALLS = [(0.3, 0.3), (0.7, 0.45), (0.55, 0.8)]
COLORS = [(230, 40, 40), (40, 200, 230), (240, 220, 30)]


def hand_made_world() -> World:
    """A world of three large balls of distinct colours on a flat background."""
    world = World(SIZE, len(BALLS), np.random.default_rng(0))
    world.background[:] = (40, 30, 60)
    world.radius = np.full(len(BALLS), 0.07)
    world.colors = list(COLORS)
    return world


def frames_at(world: World, tracks: list[list[tuple[float, float]]]) -> np.ndarray:
    """(T, H, W, 3) uint8: the simulator's drawing of `world` with its objects at each frame's
    positions (the agent first)."""
    return np.stack([redraw(world, np.asarray(objects, dtype=np.float64)) for objects in tracks])


TRACK = [[AGENT, *BALLS], [(0.25, 0.75), (0.32, 0.33), (0.67, 0.45), (0.55, 0.76)]]


def half_erased(world: World, frames: np.ndarray, ball: int = 0) -> np.ndarray:
    """`frames` with the right half of ball `ball` painted over with the background."""
    spoiled = frames.copy()
    ys, xs = (np.indices((SIZE, SIZE)) + 0.5) / SIZE
    for frame, objects in zip(spoiled, TRACK):
        x, y = objects[1 + ball]
        half = ((xs - x) ** 2 + (ys - y) ** 2 <= world.radius[ball] ** 2) & (xs > x)
        frame[half] = world.background[half]
    return spoiled


def blurred(frames: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(ndimage.gaussian_filter(frames.astype(np.float64), (0, sigma, sigma, 0))).astype(np.uint8)


def realism(frames: np.ndarray, world: World) -> float:
    return float(realism_psnr(render_errors(frames, world)[None]).mean())


def test_a_frame_of_the_world_is_read_where_its_objects_are_and_redrawn_exactly():
    world = hand_made_world()
    frames = frames_at(world, TRACK)
    positions = read_positions(frames, world)
    np.testing.assert_allclose(positions, np.asarray(TRACK), atol=0.5 / SIZE)  # the same pixels drawn
    np.testing.assert_array_equal(render_errors(frames, world), 0.0)
    assert realism(frames, world) == REALISM_MAX_DB


def test_the_truth_scores_highest_and_blur_noise_or_a_half_erased_ball_lower():
    world = hand_made_world()
    truth = frames_at(world, TRACK)
    elsewhere = frames_at(world, [[(0.6, 0.2), (0.2, 0.6), (0.8, 0.8), (0.4, 0.4)]] * 2)  # a wrong future
    noisy = np.clip(truth + np.random.default_rng(0).normal(0, 8, truth.shape), 0, 255).astype(np.uint8)
    scores = {
        "truth": realism(truth, world),
        "elsewhere": realism(elsewhere, world),
        "blurred": realism(blurred(truth, 0.7), world),
        "noisy": realism(noisy, world),
        "half-erased": realism(half_erased(world, truth), world),
    }
    assert scores["truth"] == scores["elsewhere"] == REALISM_MAX_DB  # sharp frames of this world, wherever
    for spoiled in ("blurred", "noisy", "half-erased"):
        assert scores[spoiled] < 35.0, scores


def test_a_ball_drawn_nowhere_is_not_redrawn_and_does_not_survive():
    world = hand_made_world()
    truth = frames_at(world, TRACK)
    gone = frames_at(world, [[objects[0], (np.nan, np.nan), *objects[2:]] for objects in TRACK])
    assert np.isnan(read_positions(gone, world)[:, 1]).all()
    assert realism(gone, world) == REALISM_MAX_DB  # a real frame of a world without that ball
    scene = read_scene(truth, np.asarray(TRACK))
    assert compact_balls(truth, scene, world.radius).all()
    assert not compact_balls(gone, scene, world.radius)[:, 0].any()


@pytest.mark.parametrize(
    ("spoil", "survives"),
    [
        (lambda world, frames: np.roll(frames, 2, axis=2), True),  # moved whole: still a ball
        (lambda world, frames: blurred(frames, 0.5), True),  # slightly soft: still a ball
        (half_erased, False),
        (lambda world, frames: blurred(frames, 1.5), False),  # smeared
        (
            lambda world, frames: np.round(0.5 * frames + 0.5 * world.background).astype(np.uint8),
            False,
        ),  # faint
    ],
    ids=["shifted", "soft", "half-erased", "smeared", "faded"],
)
def test_object_survival_keeps_a_whole_ball_and_drops_an_erased_or_smeared_one(spoil, survives):
    world = hand_made_world()
    truth = frames_at(world, TRACK)
    scene = read_scene(truth, np.asarray(TRACK))
    found = compact_balls(spoil(world, truth), scene, world.radius)  # (T, K)
    assert found[:, 0].all() == survives and (not survives or found.all())


def white_band(world: World, frames: np.ndarray) -> np.ndarray:
    """`frames` without the agent, a white band three pixels high along the bottom edge instead:
    what a long rollout leaves of the agent."""
    spoiled = frames_at(world, [[(np.nan, np.nan), *objects[1:]] for objects in TRACK])
    spoiled[:, -3:] = 255
    return spoiled


def stretched(world: World, frames: np.ndarray) -> np.ndarray:
    """`frames` with the agent's rows of white carried four times its width to the right."""
    spoiled = frames.copy()
    for frame in spoiled:
        rows, cols = np.nonzero((frame == 255).all(axis=-1))
        frame[rows.min() : rows.max() + 1, cols.min() : cols.max() + 13] = 255
    return spoiled


@pytest.mark.parametrize(
    ("spoil", "found"),
    [
        (lambda world, frames: frames, True),
        (lambda world, frames: np.roll(frames, 2, axis=2), True),  # moved whole: still the agent
        (lambda world, frames: blurred(frames, 0.5), True),  # slightly soft
        (white_band, False),
        (stretched, False),  # a bar, not a square
        (lambda world, frames: blurred(frames, 1.5), False),  # smeared
        (
            lambda world, frames: np.round(0.5 * frames + 0.5 * world.background).astype(np.uint8),
            False,
        ),  # faint
    ],
    ids=["truth", "shifted", "soft", "white-band", "stretched", "smeared", "faded"],
)
def test_the_agent_is_found_as_a_compact_square_not_as_a_white_band_or_a_bar(spoil, found):
    world = hand_made_world()
    truth = frames_at(world, TRACK)
    scene = read_scene(truth, np.asarray(TRACK))
    spoiled = spoil(world, truth)
    assert compact_agent(spoiled, scene).tolist() == [found] * len(TRACK)
    if spoil is white_band:  # where the detector still reads an agent: the band
        assert np.isfinite(read_positions(spoiled, world)[:, 0]).all()


@pytest.mark.parametrize("index", range(3))
def test_recorded_simulator_frames_are_near_the_ceiling_and_their_balls_survive(index):
    config = SimulatorConfig(objects=3)
    episode = record_episode(config, resolution=SIZE, length=24, seed=0, index=index)
    world = episode_world({"seed": 0, "resolution": SIZE, "simulator": config.model_dump()}, index)
    np.testing.assert_array_equal(world.render(), episode.frames[0])  # the same world, re-created
    positions = episode.state.reshape(24, -1, 4)[..., :2].astype(np.float64)
    scene = read_scene(episode.frames, positions)
    scored = np.broadcast_to(scene.scored, (24, 4))
    truth = realism_scores(episode.frames[None], [world], [scene], scored[None])
    blur = realism_scores(blurred(episode.frames, 0.7)[None], [world], [scene], scored[None])
    assert truth["realism_psnr_mean"] == pytest.approx(REALISM_MAX_DB) and blur["realism_psnr_mean"] < 30.0
    if scored[:, 1:].any():
        assert truth["object_survival"] >= 0.95
    assert compact_agent(episode.frames, scene).all()


def test_a_replayed_episode_is_the_recording_under_its_actions_and_the_same_world_under_others():
    config = SimulatorConfig(objects=3)
    data = {"seed": 0, "resolution": SIZE, "simulator": config.model_dump()}
    recorded = record_episode(config, resolution=SIZE, length=12, seed=0, index=4)
    again = replay_episode(data, 4, recorded.actions)
    np.testing.assert_array_equal(again.frames, recorded.frames)
    held_right = replay_episode(data, 4, np.full(12, 4))
    np.testing.assert_array_equal(held_right.frames[0], recorded.frames[0])
    assert held_right.state[-1, 0] > held_right.state[0, 0]  # the agent went right
    assert not np.array_equal(held_right.frames, recorded.frames)
