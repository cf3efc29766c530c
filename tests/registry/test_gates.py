"""The promotion gates as pure rules: recorded metrics in, checks out (no registry needed).

What the registry does with the checks (aliases, decision tags) is `tests/platform/test_registry.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from worldforge.registry.config import RegistryConfig
from worldforge.registry.gates import check_gates, fps_ratio, passed

# A simulator model that passes every gate: beats copy-last in PSNR and position, realism gap
# 2 dB at h8, about as sharp as the truth.
SIMULATOR = {
    "psnr_mean": 25.0,
    "baseline_psnr_mean": 20.0,
    "agent_position_error": 0.03,
    "baseline_agent_position_error": 0.09,
    "object_position_error": 0.04,
    "baseline_object_position_error": 0.10,
    "realism_psnr_h8": 30.0,
    "truth_realism_psnr_h8": 32.0,
    "baseline_realism_psnr_h8": 31.5,
    "sharpness_mean": 0.95,
    "fps_e2e": 100.0,
    "flops_per_frame": 2.0e6,
    "device": "cpu",
}
# Evaluated against its parent, which scored realism 30.0 dB (gap 2.0 dB, as the candidate) and
# sharpness 0.9.
PARENT = {"reference_psnr_mean": 25.1, "reference_realism_psnr_h8": 30.0, "reference_sharpness_mean": 0.9}


def statuses(candidate: dict, champion: dict | None = None, config: RegistryConfig | None = None) -> dict:
    return {
        check.name: check.status for check in check_gates(candidate, champion, config or RegistryConfig())
    }


def failed(candidate: dict, champion: dict | None = None, config: RegistryConfig | None = None) -> list[str]:
    return [name for name, status in statuses(candidate, champion, config).items() if status == "fail"]


def check(name: str, candidate: dict, champion: dict | None = None, config: RegistryConfig | None = None):
    [found] = [c for c in check_gates(candidate, champion, config or RegistryConfig()) if c.name == name]
    return found


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, T, C, H, W) blurred per channel with a separable Gaussian, edges replicated."""
    radius = int(3 * sigma) + 1
    taps = torch.arange(-radius, radius + 1, dtype=frames.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    b, t, c, h, w = frames.shape
    x = frames.reshape(b * t * c, 1, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(b, t, c, h, w)


def test_a_blur_that_beats_copy_last_in_psnr_is_refused_for_its_sharpness():
    from worldforge.data.config import SimulatorConfig
    from worldforge.data.sources.simulator import record_episode
    from worldforge.evaluation import metrics

    # The "model" is the truth itself, blurred by 0.6 px: what a network that predicts the mean of
    # the possible futures draws. Scored as on a video folder (no state): PSNR and sharpness only.
    episodes = [record_episode(SimulatorConfig(), 64, 12, seed=0, index=i) for i in range(4)]
    frames = torch.from_numpy(np.stack([e.frames for e in episodes])).permute(0, 1, 4, 2, 3)
    frames = frames.float() / 127.5 - 1.0  # (B, T, C, H, W) in [-1, 1]
    context, truth = frames[:, :4], frames[:, 4:]
    blurry = gaussian_blur(truth, sigma=0.6)
    copy_last = metrics.copy_last_frame(context, truth.shape[1])
    candidate = {
        "psnr_mean": metrics.overall(metrics.psnr(blurry, truth)),
        "baseline_psnr_mean": metrics.overall(metrics.psnr(copy_last, truth)),
        "sharpness_mean": metrics.overall(metrics.sharpness(blurry, truth)),
        "action_sensitivity_db_mean": 3.0,  # the blurred truth follows the actions (not what is refused)
    }
    assert candidate["psnr_mean"] > candidate["baseline_psnr_mean"] + 5  # PSNR loves it
    assert candidate["sharpness_mean"] < 0.4

    assert statuses(candidate)["beats_copy_last_frame"] == "pass"
    assert failed(candidate) == ["sharpness_in_range"]
    refused = check("sharpness_in_range", candidate)
    assert refused.value == pytest.approx(candidate["sharpness_mean"]) and refused.threshold == 0.8
    assert "blurrier than allowed" in refused.detail
    # The truth itself, scored the same way, passes: the check refuses the blur, not the world.
    truth_itself = {**candidate, "sharpness_mean": metrics.overall(metrics.sharpness(truth, truth))}
    assert statuses(truth_itself)["sharpness_in_range"] == "pass"


@pytest.mark.parametrize(("sharpness", "verdict"), [(0.3, "blurrier"), (1.4, "noisier")])
def test_sharpness_outside_the_range_fails_on_either_side(sharpness, verdict):
    assert failed({**SIMULATOR, "sharpness_mean": sharpness}) == ["sharpness_in_range"]
    assert (
        f"{verdict} than allowed"
        in check("sharpness_in_range", {**SIMULATOR, "sharpness_mean": sharpness}).detail
    )
    assert passed(
        check_gates({**SIMULATOR, "sharpness_mean": sharpness}, None, RegistryConfig(sharpness_range=None))
    )


def test_a_realism_gap_above_the_bound_fails():
    assert not failed(SIMULATOR)
    far = {**SIMULATOR, "realism_psnr_h8": 25.5}  # 6.5 dB below the recorded frames' 32.0
    assert failed(far) == ["realism_gap"]
    gap = check("realism_gap", far)
    assert gap.value == pytest.approx(6.5) and gap.threshold == 6.0
    assert failed(far, config=RegistryConfig(max_realism_gap_db=7.0)) == []
    assert statuses(far, config=RegistryConfig(max_realism_gap_db=None))["realism_gap"] == "skipped"


def test_the_realism_horizon_picks_which_gap_is_read():
    long = {**SIMULATOR, "realism_psnr_h32": 20.0, "truth_realism_psnr_h32": 31.0}  # 11 dB at h32
    assert failed(long) == []
    assert failed(long, config=RegistryConfig(realism_horizon=32)) == ["realism_gap"]
    # h16 was not evaluated (no long rollout): it cannot be verified, so it fails, saying how to fix it.
    missing = check("realism_gap", SIMULATOR, config=RegistryConfig(realism_horizon=16))
    assert (
        missing.status == "fail"
        and "realism_psnr_h16" in missing.detail
        and "eval.long_horizon" in missing.detail
    )


def test_realism_is_skipped_without_simulator_state_but_a_simulator_model_without_it_fails():
    no_realism = {k: v for k, v in SIMULATOR.items() if "realism" not in k}
    assert failed(no_realism) == ["realism_gap"]
    video = {k: v for k, v in no_realism.items() if "position_error" not in k}
    video["action_sensitivity_db_mean"] = 2.0
    gap = check("realism_gap", video)
    assert gap.status == "skipped" and "no simulator state" in gap.detail
    assert passed(check_gates(video, None, RegistryConfig()))


def test_sharpness_is_required_on_every_dataset():
    video = {k: v for k, v in SIMULATOR.items() if "position_error" not in k and "realism" not in k}
    video["action_sensitivity_db_mean"] = 2.0
    assert failed({k: v for k, v in video.items() if k != "sharpness_mean"}) == ["sharpness_in_range"]


# A model on a dataset without ground-truth state (Atari, Gymnasium, a video folder): it beats
# copy-last in PSNR and is sharp, so only action sensitivity can tell whether it follows actions.
STATELESS = {k: v for k, v in SIMULATOR.items() if "position_error" not in k and "realism" not in k}


def test_an_action_blind_model_is_refused_where_no_state_can_judge_action_following():
    blind = {**STATELESS, "action_sensitivity_db_mean": 0.0}  # ignores its actions: exactly 0 dB
    assert failed(blind) == ["action_sensitivity"]
    assert "ignores" in check("action_sensitivity", blind).detail
    follows = {**STATELESS, "action_sensitivity_db_mean": 1.3}
    assert passed(check_gates(follows, None, RegistryConfig()))
    assert failed(STATELESS) == ["action_sensitivity"]  # not measured: cannot be verified
    disabled = RegistryConfig(min_action_sensitivity_db=None)
    assert check("action_sensitivity", blind, config=disabled).status == "skipped"


def test_action_sensitivity_is_not_required_where_the_state_judges_action_following():
    sensitivity = check("action_sensitivity", SIMULATOR)  # no action_sensitivity_db_mean recorded
    assert sensitivity.status == "skipped" and "ground-truth state" in sensitivity.detail


def test_a_compressed_model_may_lose_at_most_the_margin_of_its_parents_realism_gap():
    # parent gap 32.0 - 30.0 = 2.0 dB: allowed 2.0 + 10% of 2.0 + 0.25 = 2.45 dB
    within = {**SIMULATOR, **PARENT, "realism_psnr_h8": 29.6}  # gap 2.4 dB
    beyond = {**SIMULATOR, **PARENT, "realism_psnr_h8": 29.5}  # gap 2.5 dB
    assert failed(within) == []
    assert failed(beyond) == ["realism_gap_vs_parent"]
    verdict = check("realism_gap_vs_parent", beyond)
    assert verdict.value == pytest.approx(2.5) and verdict.threshold == pytest.approx(2.45)
    assert "vs parent 2.00 dB" in verdict.detail
    # a parent more realistic than the recorded frames (negative gap): the slack alone applies
    better_parent = {**within, "reference_realism_psnr_h8": 32.5, "realism_psnr_h8": 32.3}
    assert check("realism_gap_vs_parent", better_parent).threshold == pytest.approx(-0.5 + 0.25)
    assert check("realism_gap_vs_parent", better_parent).status == "pass"  # gap -0.3 dB


@pytest.mark.parametrize(
    ("sharpness", "status"),
    [
        (0.9 / 1.1 + 0.001, "pass"),  # a little blurrier than the parent, within 10%
        (0.9 / 1.1 - 0.001, "fail"),  # blurrier than the margin allows
        (1.0, "pass"),  # sharper than the parent, as sharp as the truth: free
        (1.1 - 0.001, "pass"),
        (1.1 + 0.001, "fail"),  # noisier than the truth beyond the margin
    ],
)
def test_a_compressed_model_stays_between_its_parents_sharpness_and_the_truths(sharpness, status):
    candidate = {**SIMULATOR, **PARENT, "sharpness_mean": sharpness}
    assert check("sharpness_vs_parent", candidate).status == status


def test_a_compressed_model_without_its_parents_realism_or_sharpness_fails():
    assert failed({**SIMULATOR, **PARENT}) == []
    for key in ("reference_realism_psnr_h8", "reference_sharpness_mean"):
        candidate = {k: v for k, v in {**SIMULATOR, **PARENT}.items() if k != key}
        [name] = failed(candidate)
        assert key in check(name, candidate).detail
    skipped = statuses(SIMULATOR)  # not evaluated against a parent
    assert skipped["realism_gap_vs_parent"] == skipped["sharpness_vs_parent"] == "skipped"


# The run that motivated the noise tolerance: a 0.95M-parameter student (champion) at 46.85
# frames/s and its 30% prune (0.66M parameters) at 45.0, rejected at 0.96x on one measurement.
STUDENT = {**SIMULATOR, "fps_e2e": 46.85, "fps_e2e_spread": 0.03, "flops_per_frame": 3.0e6}
PRUNE = {**SIMULATOR, "fps_e2e": 45.0, "fps_e2e_spread": 0.025, "flops_per_frame": 2.1e6}


def test_a_candidate_within_timing_noise_of_the_champion_is_not_rejected_for_speed():
    verdict = fps_ratio(PRUNE, STUDENT, RegistryConfig())
    assert verdict.status == "pass"
    assert verdict.value == pytest.approx(45.0 / 46.85)
    assert verdict.threshold == pytest.approx(1.0 - 0.055)  # min_fps_ratio * (1 - (0.025 + 0.03))
    assert "within noise, so FLOPs decide" in verdict.detail and "5.5%" in verdict.detail


def test_within_noise_a_candidate_that_costs_more_flops_fails():
    heavier = {**PRUNE, "flops_per_frame": 3.3e6}
    verdict = fps_ratio(heavier, STUDENT, RegistryConfig())
    assert verdict.status == "fail" and "FLOPs decide" in verdict.detail
    assert fps_ratio({**PRUNE, "flops_per_frame": None}, STUDENT, RegistryConfig()).status == "fail"


def test_a_clear_slowdown_fails_whatever_its_flops():
    slower = {**PRUNE, "fps_e2e": 40.0}  # 0.854x: below 1 - 5.5%
    verdict = fps_ratio(slower, STUDENT, RegistryConfig())
    assert verdict.status == "fail" and verdict.detail.endswith("clearly slower")


def test_the_noise_tolerance_is_capped_and_absent_spreads_add_none():
    noisy = {**PRUNE, "fps_e2e": 40.0, "fps_e2e_spread": 0.4}  # 0.854x, runs all over the place
    capped = fps_ratio(noisy, STUDENT, RegistryConfig())
    assert capped.threshold == pytest.approx(0.9) and capped.status == "fail"  # cap 10%
    assert fps_ratio(noisy, STUDENT, RegistryConfig(max_fps_noise=0.2)).status == "pass"
    # A champion registered before spreads were recorded: only the candidate's spread counts.
    old_champion = {k: v for k, v in STUDENT.items() if k != "fps_e2e_spread"}
    assert fps_ratio(PRUNE, old_champion, RegistryConfig()).threshold == pytest.approx(0.975)
    assert fps_ratio({**PRUNE, "fps_e2e_spread": 0.0}, old_champion, RegistryConfig()).status == "fail"


def test_a_faster_candidate_passes_without_consulting_flops():
    faster = {**PRUNE, "fps_e2e": 50.0, "flops_per_frame": 9.9e9}
    verdict = fps_ratio(faster, STUDENT, RegistryConfig())
    assert verdict.status == "pass" and "FLOPs" not in verdict.detail


def test_the_sharpness_range_must_hold_the_truths_sharpness():
    with pytest.raises(ValidationError, match="0 < low <= 1 <= high"):
        RegistryConfig(sharpness_range=(1.2, 0.8))
    assert RegistryConfig(sharpness_range=[0.5, 2.0]).sharpness_range == (0.5, 2.0)
