"""Evaluation and promotion-gate configs: the `eval` and `registry` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worldforge.platform.schema import Section


class EvalConfig(Section):
    """How a model is judged: rollouts on held-out episodes, then cost on the current device.

    Each evaluated episode contributes one clip from its start: `context_frames` ground-truth
    frames, then `horizon` generated frames driven by the recorded actions."""

    split: str = Field("test", description="dataset split of the held-out episodes")
    episodes: int = Field(8, ge=1, description="held-out episodes to roll out (fewer if the split has fewer)")
    context_frames: int = Field(
        5, ge=1, description="ground-truth frames given to the model; 1 + k * temporal_compression"
    )
    horizon: int = Field(
        8, ge=1, description="frames generated per episode; a multiple of temporal_compression"
    )
    long_horizon: int | None = Field(
        None,
        ge=1,
        description="also roll out this many frames (beyond the training clip, through the sliding KV window) "
        "and record PSNR and agent/ball error per step against copy-last-frame, and the motion ratio",
    )
    denoise_steps: int | None = Field(
        None, ge=1, description="solver steps per frame; None: the package's sampler.steps"
    )
    batch_size: int = Field(8, ge=1, description="episodes rolled out together for the quality metrics")
    videos: int = Field(
        2, ge=0, description="episodes written as side-by-side videos (ground truth | prediction)"
    )
    latency_repeats: int = Field(
        5, ge=1, description="timed batch-1 rollouts (after one warm-up) for speed and latency"
    )
    device: str = Field("auto", description="auto (cuda if present), cpu, cuda, cuda:N")
    seed: int = Field(0, description="seeds the rollouts' noise: model and reference see the same noise")


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
