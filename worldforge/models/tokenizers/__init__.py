"""Tokenizers: frames `(B, T, C, H, W)` in [-1, 1] <-> latents `(B, T', c, h, w)`.

Every tokenizer is causal in time (latent frame j depends on frames up to its last one only) and
exposes the same interface:

    encode(frames) -> latents          decode(latents, chunk=None) -> frames
    latent_frames(T) -> T'             frames_per_latent: int (r; T = 1 + (T' - 1) r)

`patch` is plain patchify (no weights; for the smallest presets); `vae` is `CausalVAE` (tokenizers/vae.py).
"""

from __future__ import annotations

from torch import nn

from worldforge.models.config import TokenizerConfig
from worldforge.models.tokenizers.frames import check_frames
from worldforge.models.tokenizers.patch import PatchTokenizer
from worldforge.models.tokenizers.vae import CausalVAE

__all__ = ["CausalVAE", "PatchTokenizer", "build_tokenizer", "check_frames"]


def build_tokenizer(config: TokenizerConfig) -> nn.Module:
    if config.kind == "patch":
        return PatchTokenizer(config)
    return CausalVAE(config)
