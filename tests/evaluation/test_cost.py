"""What a model costs: speed is the median of repeated timed runs, recorded with their spread."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.cost import measure_cost, relative_spread
from worldforge.evaluation.rollout_eval import EvalClips


def random_clips(horizon: int = 2, context: int = 2) -> EvalClips:
    """Two clips of noise frames at 32x32 with random actions: enough to time a rollout."""
    generator = torch.Generator().manual_seed(0)
    return EvalClips(
        dataset=Path("unused"),
        split="test",
        source="simulator",
        episodes=[0, 1],
        context=torch.rand(2, context, 3, 32, 32, generator=generator) * 2 - 1,
        target=torch.rand(2, horizon, 3, 32, 32, generator=generator) * 2 - 1,
        actions=torch.randint(0, 6, (2, context + horizon), generator=generator),
        action_space={"kind": "discrete", "n": 6},
        positions=None,
        fps=15.0,
    )


def test_the_spread_is_half_the_runs_range_of_rates_over_their_median():
    # 0.5 s, 0.4 s, 0.625 s per run: rates 2.0, 2.5, 1.6 per second, median 2.0
    assert relative_spread([0.5, 0.4, 0.625]) == pytest.approx((2.5 - 1.6) / (2 * 2.0))
    assert relative_spread([0.3]) == 0.0


def test_speed_is_timed_over_repeated_runs_and_records_their_spread(make_world_model):
    model = make_world_model(depth=1, width=32, heads=2, context_window=4)
    clips, cpu = random_clips(), torch.device("cpu")

    once = measure_cost(model, clips, EvalConfig(latency_repeats=1, device="cpu"), cpu)
    assert once["fps_e2e_spread"] == once["fps_denoise_spread"] == 0.0  # one run: no noise measured

    repeated = measure_cost(model, clips, EvalConfig(latency_repeats=3, device="cpu"), cpu)
    assert repeated["fps_e2e"] > 0 and repeated["fps_denoise"] >= repeated["fps_e2e"]
    for key in ("fps_e2e_spread", "fps_denoise_spread"):
        assert 0.0 < repeated[key] < math.inf  # three timed runs never agree to the nanosecond
    assert repeated["flops_per_frame"] == once["flops_per_frame"]  # the cost that does not vary
