"""The `registry` section: promotion gates and the promotion lock."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from worldforge.core.schema import Section

# The rollout steps whose realism an evaluation scores (`realism_psnr_h{H}`, ...).
RealismHorizon = Literal[8, 16, 32]


class RegistryConfig(Section):
    """Promotion gates: a version becomes `champion` only if every check passes.

    Gates relative to the champion are skipped (and recorded as skipped) while there is none;
    the absolute gates (beats copy-last-frame, realism, sharpness) always apply. The exact rules
    are in `worldforge/registry/gates.py`."""

    max_psnr_drop_db: float = Field(
        0.5, ge=0.0, description="candidate psnr_mean >= champion psnr_mean - this"
    )
    min_fps_ratio: float = Field(
        1.0,
        ge=0.0,
        description="candidate fps / champion fps >= this, a shortfall within timing noise decided by FLOPs "
        "per frame (see max_fps_noise; 0 disables)",
    )
    fps_metric: Literal["fps_e2e", "fps_denoise"] = Field(
        "fps_e2e",
        description="which throughput the fps gate compares: end to end (with decode) or denoising only",
    )
    require_beats_baseline: bool = Field(
        True, description="candidate psnr_mean must exceed its copy-last-frame baseline"
    )
    require_action_following: bool = Field(
        True,
        description="candidate agent (and ball) position error must be below copy-last-frame's on the same "
        "episodes (datasets with ground-truth state, e.g. the simulator)",
    )
    min_action_sensitivity_db: float | None = Field(
        0.5,
        description="on datasets without ground-truth state (Atari, Gymnasium, video folders), candidate "
        "action_sensitivity_db_mean (dB by which its rollouts under the recorded actions beat the same "
        "rollouts under another episode's actions; 0 = it ignores its actions) >= this (null disables)",
    )
    max_error_increase: float = Field(
        0.10,
        ge=0.0,
        description="a model evaluated against its parent (a compression stage) may have at most this much "
        "higher agent and ball position error than the parent, as a fraction (0.1: 10%); the same margin "
        "bounds its realism gap and sharpness against the parent's",
    )
    realism_horizon: RealismHorizon = Field(
        8,
        description="the rollout step H whose realism the gates read (`realism_psnr_h{H}`; 16 and 32 exist "
        "only where a long-horizon rollout was evaluated)",
    )
    max_realism_gap_db: float | None = Field(
        6.0,
        ge=0.0,
        description="candidate realism gap at realism_horizon (truth_realism_psnr_h{H} - realism_psnr_h{H}, dB: "
        "how much less like the simulator's own frames its frames are than the recorded ones) <= this, on "
        "datasets with simulator state; a compressed model's gap <= its parent's + max_error_increase of it "
        "+ realism_slack_db (null disables both)",
    )
    realism_slack_db: float = Field(
        0.25,
        ge=0.0,
        description="dB a compressed model's realism gap may exceed its parent's beyond max_error_increase of "
        "it: evaluation noise, and room when the parent's gap is near 0",
    )
    sharpness_range: tuple[float, float] | None = Field(
        (0.8, 1.25),
        description="[low, high] bounds on candidate sharpness_mean (1.0: as sharp as the truth, below "
        "blurrier, above noisier); a compressed model's sharpness lies between its parent's and 1.0, widened "
        "by the factor 1 + max_error_increase (null disables both)",
    )
    max_fps_noise: float = Field(
        0.10,
        ge=0.0,
        lt=1.0,
        description="the most timing noise the fps gate forgives: a candidate slower than min_fps_ratio by "
        "less than the two measurements' spreads together (fps_*_spread, capped at this) is within noise and "
        "judged by flops_per_frame instead",
    )
    lock_timeout_s: float = Field(
        120.0, gt=0, description="embedded store: wait this long for the promotion lock"
    )

    @field_validator("sharpness_range")
    @classmethod
    def _ordered_range(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is not None and not 0 < bounds[0] <= 1 <= bounds[1]:
            raise ValueError(
                "expected [low, high] with 0 < low <= 1 <= high (1.0 is the truth's sharpness), e.g. [0.8, 1.25]"
            )
        return bounds
