"""The frame-shape check every tokenizer makes before encoding."""

from __future__ import annotations

import torch

from worldforge.models.config import ModelConfigError


def check_frames(frames: torch.Tensor, compression: int, frames_per_latent: int) -> None:
    """Raise ModelConfigError unless frames is (B, T, C, H, W) that this tokenizer can encode."""
    if frames.ndim != 5:
        raise ModelConfigError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
    _, t, _, h, w = frames.shape
    if h % compression or w % compression:
        raise ModelConfigError(
            f"frame size {h}x{w} is not divisible by the spatial compression {compression}"
        )
    if (t - 1) % frames_per_latent:
        raise ModelConfigError(
            f"{t} frames: with temporal compression {frames_per_latent} the number of frames must be "
            f"1 + k * {frames_per_latent}"
        )
