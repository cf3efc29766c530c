"""Finding the agent and the balls in frames: hand-made frames with known positions, and the
simulator's own frames (the detector floor)."""

from __future__ import annotations

import numpy as np
import pytest

from worldforge.data.config import SimulatorConfig
from worldforge.data.sources.simulator import record_episode
from worldforge.evaluation.objects import MISSING_ERROR, locate, position_errors, read_scene, truth_scored

SIZE = 32
BACKGROUND = (40, 30, 60)
BALL = (230, 40, 40)


def draw(
    agent: tuple[float, float],
    balls: list[tuple[float, float]],
    colors: list[tuple[int, int, int]],
    strength: float = 1.0,
) -> np.ndarray:
    """(H, W, 3) uint8: a flat background, a disc of radius 2 px per ball and the 4 px agent square,
    each blended over the background with `strength` (1: drawn, 0.5: half faded)."""
    frame = np.empty((SIZE, SIZE, 3), dtype=np.float64)
    frame[:] = BACKGROUND
    ys, xs = np.indices((SIZE, SIZE)) + 0.5
    for (x, y), color in zip(balls, colors):
        disc = (xs - x * SIZE) ** 2 + (ys - y * SIZE) ** 2 <= 4.0
        frame[disc] = (1 - strength) * np.asarray(BACKGROUND) + strength * np.asarray(color)
    square = (np.abs(xs - agent[0] * SIZE) <= 2) & (np.abs(ys - agent[1] * SIZE) <= 2)
    frame[square] = (1 - strength) * np.asarray(BACKGROUND) + strength * 255
    return np.round(frame).astype(np.uint8)


def clip(tracks: list[tuple[tuple[float, float], list[tuple[float, float]]]], colors, strength: float = 1.0):
    """Frames (T, H, W, 3) and positions (T, 1 + K, 2) for a list of (agent, balls) per frame."""
    frames = np.stack([draw(agent, balls, colors, strength) for agent, balls in tracks])
    positions = np.asarray([[agent, *balls] for agent, balls in tracks], dtype=np.float64)
    return frames, positions


TRACKS = [
    ((0.2, 0.7), [(0.25, 0.25), (0.7, 0.5)]),
    ((0.25, 0.7), [(0.3, 0.3), (0.65, 0.5)]),
    ((0.3, 0.7), [(0.35, 0.35), (0.6, 0.5)]),
]
COLORS = [BALL, (40, 200, 230)]


def test_every_object_is_found_where_it_was_drawn_and_the_background_is_read():
    frames, positions = clip(TRACKS, COLORS)
    scene = read_scene(frames, positions)
    np.testing.assert_allclose(scene.background, np.broadcast_to(BACKGROUND, (SIZE, SIZE, 3)), atol=1)
    np.testing.assert_allclose(scene.colors, [(255, 255, 255), *COLORS], atol=1)
    np.testing.assert_allclose(locate(frames, scene), positions, atol=0.5 / SIZE)


def test_a_shifted_object_is_off_by_the_shift_and_a_faded_one_is_still_found():
    frames, positions = clip(TRACKS, COLORS)
    scene = read_scene(frames, positions)
    scored = truth_scored(frames, scene)
    assert scored.all()
    shifted = np.roll(frames, 3, axis=2)  # everything 3 px to the right
    error, found = position_errors(shifted, positions, scene, scored)
    assert found.all()
    np.testing.assert_allclose(error, 3 / SIZE, atol=0.5 / SIZE)
    faded, _ = clip(TRACKS, COLORS, strength=0.5)  # half blended into the background: a blurry prediction
    error, found = position_errors(faded, positions, scene, scored)
    sharp, _ = position_errors(frames, positions, scene, scored)
    assert found.all()
    np.testing.assert_allclose(error, sharp, atol=0.1 / SIZE)  # found where the sharp one is


def test_an_object_drawn_nowhere_costs_a_guess():
    frames, positions = clip(TRACKS, COLORS)
    scene = read_scene(frames, positions)
    erased, _ = clip(TRACKS, COLORS, strength=0.1)  # all but gone: a rollout that lost its objects
    error, found = position_errors(erased, positions, scene, truth_scored(frames, scene))
    assert not found.any()
    assert (error == MISSING_ERROR).all()


def test_balls_of_one_colour_are_not_scored():
    colors = [BALL, (225, 50, 45)]  # 10 levels apart: the detector cannot tell them apart
    frames, positions = clip(TRACKS, colors)
    scene = read_scene(frames, positions)
    assert scene.scored.tolist() == [True, False, False]
    scored = truth_scored(frames, scene)
    error, _ = position_errors(frames, positions, scene, scored)
    assert np.isfinite(error[:, 0]).all() and np.isnan(error[:, 1:]).all()


@pytest.mark.parametrize("index", range(4))
def test_on_simulator_frames_the_detector_is_within_a_pixel(index):
    episode = record_episode(SimulatorConfig(objects=3), resolution=SIZE, length=12, seed=0, index=index)
    positions = episode.state.reshape(12, -1, 4)[..., :2].astype(np.float64)  # (T, 1 + 3, 2)
    scene = read_scene(episode.frames, positions)
    scored = truth_scored(episode.frames, scene)
    error, found = position_errors(episode.frames, positions, scene, scored)
    assert scored[:, 0].all()  # the agent is drawn on top: always there
    assert found[scored].all()
    assert np.nanmean(error) < 1 / SIZE
