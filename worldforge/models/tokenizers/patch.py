"""`patch`: plain patchify, no weights (for the smallest presets)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from worldforge.models.config import TokenizerConfig
from worldforge.models.tokenizers.frames import check_frames


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
