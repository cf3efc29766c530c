"""Evaluation and promotion-gate configs: the `eval` and `registry` sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from worldforge.core.schema import Section

Horizon = Annotated[int, Field(ge=1)]


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
    long_horizon: Horizon | list[Horizon] | None = Field(
        None,
        description="horizons (one or a list, e.g. [16, 32, 64]) beyond eval.horizon: one rollout to the "
        "longest (beyond the training clip, through the sliding KV window), each horizon scored on its "
        "prefix against copy-last-frame (PSNR, SSIM, agent/ball error, sharpness per step, motion ratio); "
        "horizons up to eval.horizon are the main rollout's and skipped",
    )
    play_episodes: int = Field(
        16,
        ge=0,
        description="held-out episodes played far past their recording (eval.play_frames frames, one batch), "
        "scored without a true future against the simulator's own continuation; simulator datasets only; 0: off",
    )
    play_frames: int = Field(
        256,
        ge=0,
        description="frames of each long play, after eval.context_frames (a multiple of temporal_compression); "
        "scored at steps 32, 64, 128, ... and at the last; 0: off",
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
    seeds: int = Field(
        1,
        ge=1,
        description="the quality measures are the mean over this many rollouts of the same episodes, under "
        "seeds eval.seed, eval.seed + 1, ...: near a bar or a gate's bound one seed's noise can decide "
        "(docs/world-model.md block 23); each seed costs another rollout of every model (not of the long plays)",
    )

    @property
    def long_horizons(self) -> list[int]:
        """`long_horizon` as a sorted list of distinct horizons beyond `horizon` ([]: no long rollout)."""
        chosen = [self.long_horizon] if isinstance(self.long_horizon, int) else self.long_horizon or []
        return sorted({h for h in chosen if h > self.horizon})
