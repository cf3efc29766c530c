"""Tokenizers: frames `(B, T, C, H, W)` in [-1, 1] <-> latents `(B, T', c, h, w)`.

Every tokenizer is causal in time (latent frame j depends on frames up to its last one only) and
exposes the same interface:

    encode(frames) -> latents          decode(latents, chunk=None) -> frames
    latent_frames(T) -> T'             frames_per_latent: int (r; T = 1 + (T' - 1) r)

`patch` is plain patchify (no weights; for the smallest presets); `vae` is `CausalVAE` (vae.py).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from worldforge.models.config import ModelConfigError, TokenizerConfig


class PatchTokenizer(nn.Module):
    """Each p x p patch of a frame becomes one latent cell of C p^2 channels; lossless."""

    frames_per_latent = 1

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.patch = config.patch_size
        self.latent_channels = config.latent_dim

    def latent_frames(self, frames: int) -> int:
        return frames

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames, self.patch, 1)
        # (B, T, C, H, W) -> (B, T, C p p, H/p, W/p)
        latents = rearrange(frames, "b t c (h p1) (w p2) -> b t (c p1 p2) h w", p1=self.patch, p2=self.patch)
        return latents * self.config.latent_scale

    def decode(self, latents: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        # (B, T, C p p, h, w) -> (B, T, C, h p, w p)
        latents = latents / self.config.latent_scale
        return rearrange(latents, "b t (c p1 p2) h w -> b t c (h p1) (w p2)", p1=self.patch, p2=self.patch)


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


def build_tokenizer(config: TokenizerConfig) -> nn.Module:
    if config.kind == "patch":
        return PatchTokenizer(config)
    from worldforge.models.vae import CausalVAE

    return CausalVAE(config)
