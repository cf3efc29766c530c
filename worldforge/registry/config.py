"""The `registry` section: promotion gates and the promotion lock."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worldforge.core.schema import Section


class RegistryConfig(Section):
    """Promotion gates: a version becomes `champion` only if every check passes.

    Gates relative to the champion are skipped (and recorded as skipped) while there is none;
    the absolute gate (beats copy-last-frame) always applies."""

    max_psnr_drop_db: float = Field(
        0.5, ge=0.0, description="candidate psnr_mean >= champion psnr_mean - this"
    )
    min_fps_ratio: float = Field(1.0, ge=0.0, description="candidate fps / champion fps >= this (0 disables)")
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
    max_error_increase: float = Field(
        0.10,
        ge=0.0,
        description="a model evaluated against its parent (a compression stage) may have at most this much "
        "higher agent and ball position error than the parent, as a fraction (0.1: 10%)",
    )
    lock_timeout_s: float = Field(
        120.0, gt=0, description="embedded store: wait this long for the promotion lock"
    )
