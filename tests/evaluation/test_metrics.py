"""Quality metrics on constructed cases whose values are known by hand."""

import math

import numpy as np
import pytest
import torch

from worldforge.evaluation import metrics
from worldforge.evaluation.rollout_eval import EvalClips, baseline_scores, prefix_scores, score


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


def test_ssim_is_the_mean_of_the_index_under_an_11_tap_gaussian_window_of_sigma_1_5():
    # The definition written out with a 2-D depthwise window, on a frame taller than it is wide
    # and one smaller than the window (9 high: a 9-tap window), against the banded matmuls.
    for shape in ((2, 3, 3, 20, 14), (1, 2, 3, 9, 12)):
        generator = torch.Generator().manual_seed(shape[3])
        target = torch.rand(shape, generator=generator) * 2 - 1
        prediction = (target + 0.4 * torch.randn(shape, generator=generator)).clamp(-1, 1)
        size = min(11, shape[3] - (1 - shape[3] % 2), shape[4] - (1 - shape[4] % 2))
        taps = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * 1.5**2))
        window = (taps[:, None] * taps[None, :] / taps.sum() ** 2).expand(3, 1, size, size)
        x, y = (f.double().flatten(0, 1) for f in (prediction, target))

        def mean(image, window=window):
            return torch.nn.functional.conv2d(image, window, groups=3)

        mu_x, mu_y = mean(x), mean(y)
        c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
        cov = mean(x * y) - mu_x * mu_y
        spread = mean(x * x) - mu_x**2 + mean(y * y) - mu_y**2
        index = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (spread + c2))
        expected = index.flatten(1).mean(dim=1).reshape(shape[:2])
        assert torch.allclose(metrics.ssim(prediction, target), expected, rtol=0, atol=1e-12)


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
    assert oracle["psnr_per_step"] == pytest.approx([metrics.PSNR_MAX_DB] * 4, abs=1e-9)
    assert oracle["psnr_mean"] == pytest.approx(metrics.PSNR_MAX_DB, abs=1e-9)
    assert oracle["ssim_mean"] == pytest.approx(1.0)


def test_steps_without_any_value_are_nan_and_ignored_in_means():
    assert math.isnan(metrics.overall(np.full((1, 2), np.nan)))
    assert metrics.per_step(np.array([[1.0, np.nan], [3.0, np.nan]])) == [
        2.0,
        pytest.approx(float("nan"), nan_ok=True),
    ]


def test_motion_ratio_is_zero_for_a_frozen_rollout_and_one_for_the_truth():
    target = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    assert torch.allclose(metrics.motion_ratio(target, target), torch.ones(2, 4, dtype=torch.float64))
    frozen = target[:, :1].expand_as(target)
    assert metrics.motion_ratio(frozen, target).abs().max() == 0
    noise = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    assert metrics.motion_ratio(noise, target * 0.1).min() > 5  # noise changes far more than the world does


def squares(corners: list[tuple[int, int]], side: int = 4, size: int = 16) -> torch.Tensor:
    """(len(corners), 1, 3, size, size): a white square of `side` pixels on black, per clip at its
    (row, column) corner."""
    frames = torch.full((len(corners), 1, 3, size, size), -1.0)
    for clip, (row, column) in enumerate(corners):
        frames[clip, :, :, row : row + side, column : column + side] = 1.0
    return frames


def box_blur(frames: torch.Tensor) -> torch.Tensor:
    """A 3x3 mean filter over each frame (edges: the mean of the pixels inside)."""
    b, t, c, h, w = frames.shape
    flat = frames.reshape(b * t, c, h, w)
    return torch.nn.functional.avg_pool2d(flat, 3, stride=1, padding=1, count_include_pad=False).reshape(
        frames.shape
    )


def test_high_frequency_energy_ignores_flat_frames_and_ramps_and_counts_edges():
    flat = torch.full((1, 1, 3, 8, 8), 0.3)
    ramp = torch.linspace(-1, 1, 8).expand(1, 1, 3, 8, 8)
    assert metrics.high_frequency_energy(flat).item() == 0
    assert metrics.high_frequency_energy(ramp).item() == pytest.approx(0, abs=1e-12)
    # one pixel raised by 1: the Laplacian is -4 there and 1 at its 4 neighbours, per channel
    dot = torch.zeros(1, 1, 3, 8, 8)
    dot[..., 4, 4] = 1.0
    assert metrics.high_frequency_energy(dot).item() == pytest.approx(3 * (16 + 4))


def test_sharpness_is_one_for_the_truth_below_for_a_blurred_copy_above_for_added_noise():
    target = torch.cat([squares([(2, 3), (8, 6)]), squares([(5, 5), (1, 9)])], dim=1)  # (2 clips, 2 steps)
    assert torch.equal(metrics.sharpness(target.clone(), target), torch.ones(2, dtype=torch.float64))
    blurred = metrics.sharpness(box_blur(target), target)
    assert (blurred < 0.5).all()
    noisy = target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    assert (metrics.sharpness(noisy, target) > 1.5).all()
    assert (metrics.sharpness(box_blur(noisy), target) < metrics.sharpness(noisy, target)).all()


def test_psnr_prefers_the_blurry_mean_of_two_futures_and_sharpness_exposes_it():
    # Two clips, the same past, two futures: the square went up-left or down-right.
    target = squares([(2, 2), (10, 10)])
    mean = (target[:1] + target[1:]).div(2).expand_as(target)  # the MSE-optimal frame: both, half bright
    guess = squares([(2, 10), (2, 10)])  # a sharp square, in the wrong place both times
    assert metrics.psnr(mean, target).mean() > metrics.psnr(guess, target).mean() + 5  # 4x lower MSE: 6 dB
    assert metrics.sharpness(mean, target).item() == pytest.approx(0.5)  # two edges at half contrast
    assert metrics.sharpness(guess, target).item() == pytest.approx(1.0)


def test_sharpness_is_nan_where_the_truth_is_flat():
    flat = torch.zeros(2, 1, 3, 8, 8)
    assert math.isnan(metrics.sharpness(torch.rand(2, 1, 3, 8, 8), flat).item())


def test_scores_carry_sharpness_and_copy_last_frame_is_near_one():
    clips = constructed_clips()
    scores = {**score(clips.target.clone(), clips), **baseline_scores(clips)}
    assert scores["sharpness_per_step"] == [1.0] * clips.horizon and scores["sharpness_mean"] == 1.0
    assert len(scores["baseline_sharpness_per_step"]) == clips.horizon
    # a recorded frame repeated: as sharp as the recorded frames it stands in for
    assert scores["baseline_sharpness_mean"] == pytest.approx(1.0, abs=0.1)


def test_every_horizon_is_scored_on_its_prefix_of_one_rollout():
    clips = constructed_clips()
    prediction = torch.rand(clips.target.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    entries = prefix_scores(prediction, clips, [3, 4])
    assert sorted(entries) == [3, 4]
    for horizon, entry in entries.items():
        for key in ("psnr", "ssim", "sharpness", "baseline_psnr", "baseline_sharpness"):
            assert len(entry[f"{key}_per_step"]) == horizon
        assert entry["psnr_per_step"] == score(prediction, clips)["psnr_per_step"][:horizon]
        assert entry["motion_ratio"] > 0
    whole = {**score(prediction, clips), **baseline_scores(clips)}
    assert {key: value for key, value in entries[4].items() if key != "motion_ratio"} == whole
    assert entries[3]["psnr_mean"] == pytest.approx(sum(entries[4]["psnr_per_step"][:3]) / 3)
