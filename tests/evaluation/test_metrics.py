"""Quality metrics on constructed cases whose values are known by hand."""

import math

import numpy as np
import pytest
import torch

from worldforge.evaluation import metrics
from worldforge.evaluation.rollout_eval import EvalClips, baseline_scores, score


def stripes(width: int, size: int = 16, frames: int = 3) -> torch.Tensor:
    """(1, frames, 3, size, size): vertical stripes `width` pixels wide, alternating -1 and +1."""
    columns = torch.where((torch.arange(size) // width) % 2 == 0, -1.0, 1.0)
    return columns.expand(1, frames, 3, size, size).clone()


def test_perfect_prediction_scores_the_clipped_maximum_and_ssim_one():
    target = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    assert torch.equal(
        metrics.psnr(target.clone(), target), torch.full((2, 3), metrics.PSNR_MAX_DB, dtype=torch.float64)
    )
    assert torch.allclose(metrics.ssim(target.clone(), target), torch.ones(2, 3, dtype=torch.float64))


def test_one_pixel_shift_of_two_pixel_stripes_is_3_dB():
    # Shifting 2-wide stripes by one pixel flips every other column by 2: MSE = 4 / 2 = 2,
    # PSNR = 10 log10(range^2 / MSE) = 10 log10(4 / 2) = 3.0103 dB.
    target = stripes(width=2)
    shifted = torch.roll(target, shifts=1, dims=-1)
    assert metrics.psnr(shifted, target).tolist() == [[pytest.approx(10 * math.log10(2), abs=1e-12)] * 3]


def test_one_pixel_shift_of_one_pixel_stripes_is_0_dB():
    target = stripes(width=1)  # every pixel flips by 2: MSE = 4, PSNR = 0 dB
    assert metrics.psnr(torch.roll(target, 1, dims=-1), target).tolist() == [
        [pytest.approx(0.0, abs=1e-12)] * 3
    ]


def test_uniform_offset_gives_psnr_from_its_mse():
    target = torch.zeros(1, 2, 3, 8, 8)
    # MSE = 0.1^2 = 0.01 -> 10 log10(4 / 0.01) = 26.0206 dB
    assert metrics.psnr(target + 0.1, target).tolist() == [
        [pytest.approx(10 * math.log10(400), abs=1e-6)] * 2
    ]


def test_ssim_of_flat_frames_is_the_luminance_term():
    # Flat frames have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 2)^2.
    a, b, c1 = 0.2, -0.3, (0.01 * 2) ** 2
    prediction, target = torch.full((1, 1, 3, 16, 16), a), torch.full((1, 1, 3, 16, 16), b)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert metrics.ssim(prediction, target).item() == pytest.approx(expected, rel=1e-6)


def test_ssim_falls_with_structure_lost():
    target = stripes(width=2)
    assert metrics.ssim(torch.roll(target, 1, dims=-1), target).max() < 0.1
    assert metrics.ssim(target * 0.9, target).min() > 0.95


def test_metrics_are_per_frame():
    target = torch.zeros(1, 3, 3, 8, 8)
    prediction = target.clone()
    prediction[:, 1] += 0.1
    prediction[:, 2] += 0.2
    values = metrics.psnr(prediction, target)[0]
    assert values[0] == metrics.PSNR_MAX_DB
    assert values[1] == pytest.approx(10 * math.log10(4 / 0.01))
    assert values[2] == pytest.approx(10 * math.log10(4 / 0.04))


def test_copy_last_frame_repeats_the_last_context_frame():
    context = torch.randn(2, 3, 3, 8, 8)
    baseline = metrics.copy_last_frame(context, horizon=4)
    assert baseline.shape == (2, 4, 3, 8, 8)
    assert all(torch.equal(baseline[:, k], context[:, -1]) for k in range(4))


def constructed_clips(with_positions: bool = False) -> EvalClips:
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 6, 3, 16, 16, generator=generator) * 2 - 1
    return EvalClips(
        dataset=None,
        split="test",
        source="constructed",
        episodes=[0, 1, 2],
        context=frames[:, :2],
        target=frames[:, 2:],
        actions=torch.zeros(3, 6, dtype=torch.long),
        action_space={"kind": "discrete", "n": 1},
        positions=np.full((3, 4, 2), 0.5) if with_positions else None,
        fps=10.0,
    )


def test_a_copy_last_predictor_scores_exactly_the_baseline():
    clips = constructed_clips()
    copier = score(metrics.copy_last_frame(clips.context, clips.horizon), clips)
    baseline = baseline_scores(clips)
    assert {f"baseline_{key}": value for key, value in copier.items()} == baseline


def test_an_oracle_scores_the_maximum_at_every_step():
    clips = constructed_clips()
    oracle = score(clips.target.clone(), clips)
    assert oracle["psnr_per_step"] == [metrics.PSNR_MAX_DB] * 4
    assert oracle["psnr_mean"] == metrics.PSNR_MAX_DB
    assert oracle["ssim_mean"] == pytest.approx(1.0)


def test_agent_is_found_where_the_simulator_put_it():
    from worldforge.data.config import SimulatorConfig
    from worldforge.data.sources.simulator import record_episode
    from worldforge.evaluation.rollout_eval import to_model_frames

    episode = record_episode(SimulatorConfig(objects=2), resolution=32, length=6, seed=0, index=0)
    frames = to_model_frames(episode.frames)[None]  # (1, 6, 3, 32, 32)
    truth = episode.state[None, :, :2].astype(np.float64)  # (1, 6, 2) agent (x, y)
    error = metrics.agent_position_error(frames, truth)
    assert error.shape == (1, 6)
    assert error.max() < 1 / 32  # within a pixel of the true centre
    moved = metrics.agent_position_error(torch.roll(frames, shifts=4, dims=-1), truth)  # 4 px to the right
    assert moved.min() > 3 / 32


def test_a_frame_without_agent_is_nan_and_ignored_in_means():
    frames = torch.full((1, 2, 3, 16, 16), -1.0)  # black: no agent
    error = metrics.agent_position_error(frames, np.zeros((1, 2, 2)))
    assert np.isnan(error).all()
    assert math.isnan(metrics.overall(error))
    assert metrics.per_step(np.array([[1.0, np.nan], [3.0, np.nan]])) == [
        2.0,
        pytest.approx(float("nan"), nan_ok=True),
    ]


def disc_frames(centres: list[list[tuple[float, float]]], colors: list[tuple[int, int, int]], size: int = 32):
    """(1, T, 3, size, size) frames on a dark background with one disc of radius 2 px per ball at the
    given normalised (x, y) centres (frame by frame), and the centres as (1, T, K, 2)."""
    frames = np.full((len(centres), size, size, 3), 30, dtype=np.uint8)
    ys, xs = np.indices((size, size)) + 0.5
    for t, frame_centres in enumerate(centres):
        for (x, y), color in zip(frame_centres, colors):
            frames[t][(xs - x * size) ** 2 + (ys - y * size) ** 2 <= 4.0] = color
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 127.5 - 1.0
    return tensor, np.asarray(centres, dtype=np.float64)[None]


def test_balls_are_found_by_colour_where_they_were_drawn():
    from worldforge.data.sources.simulator import ball_colors

    colors = [(230, 40, 40), (40, 200, 230)]
    centres = [[(0.25, 0.25), (0.7, 0.6)], [(0.3, 0.25), (0.65, 0.55)], [(0.35, 0.3), (0.6, 0.5)]]
    frames, truth = disc_frames(centres, colors)
    found_colors = ball_colors(frames[0].numpy(), truth[0])
    np.testing.assert_allclose(found_colors, np.asarray(colors, dtype=np.float32), atol=1)
    error = metrics.object_position_error(frames, truth, found_colors[None])
    assert error.shape == (1, 3, 2)
    assert error.max() < 0.5 / 32  # within half a pixel
    # each ball drawn 3 px to the right of where it is: an error of 3 px, for every ball and frame
    shifted = metrics.object_position_error(torch.roll(frames, shifts=3, dims=-1), truth, found_colors[None])
    np.testing.assert_allclose(shifted, 3 / 32, atol=0.5 / 32)


def test_a_blurred_ball_is_still_found_and_a_vanished_one_is_nan():
    colors = np.array([[230.0, 40.0, 40.0]])
    frames, truth = disc_frames([[(0.5, 0.5)], [(0.5, 0.5)]], [(230, 40, 40)])
    background = torch.full_like(frames[:, :1], 30 / 127.5 - 1.0)
    blurred = 0.8 * frames[:, :1] + 0.2 * background  # a faded ball: every pixel 40 levels off its colour
    vanished = background  # nothing left of it
    error = metrics.object_position_error(torch.cat([blurred, vanished], dim=1), truth, colors[None])
    assert error[0, 0, 0] < 0.5 / 32
    assert np.isnan(error[0, 1, 0])


def test_balls_of_the_same_colour_are_not_scored():
    from worldforge.data.sources.simulator import distinct_balls

    colors = np.array([[230.0, 40.0, 40.0], [225.0, 50.0, 45.0], [40.0, 200.0, 230.0]])
    assert distinct_balls(colors).tolist() == [False, False, True]
    frames, truth = disc_frames([[(0.2, 0.2), (0.8, 0.8), (0.5, 0.5)]], [tuple(c) for c in colors.astype(int)])
    error = metrics.object_position_error(frames, truth, colors[None])
    assert np.isnan(error[0, 0, :2]).all() and error[0, 0, 2] < 0.5 / 32


def test_ball_detector_floor_on_simulator_frames_is_below_a_pixel():
    from worldforge.data.config import SimulatorConfig
    from worldforge.data.sources.simulator import ball_colors, record_episode
    from worldforge.evaluation.rollout_eval import to_model_frames

    errors = []
    for index in range(4):
        episode = record_episode(SimulatorConfig(objects=3), resolution=32, length=12, seed=0, index=index)
        balls = episode.state[:, 4:].reshape(12, 3, 4)[..., :2].astype(np.float64)  # (T, K, 2)
        colors = ball_colors(episode.frames, balls)
        frames = to_model_frames(episode.frames)[None]
        errors.append(metrics.object_position_error(frames, balls[None], colors[None]))
    assert metrics.overall(np.concatenate(errors)) < 1 / 32
