"""A causal 3D convolutional VAE: frames `(B, T, C, H, W)` <-> latents `(B, T', c, H/s, W/s)`.

Causal in time: every convolution pads only on the past side (replicating the first frame), and
normalisation is per frame, so latent frame j depends on frames up to its own only. With
temporal compression r, latent frame 0 encodes frame 0 alone and latent frame j >= 1 encodes
frames r(j-1)+1 .. rj, so T = 1 + (T' - 1) r and streaming stays causal.

Decoding can run in chunks of latent frames: each causal convolution keeps the last frames it
saw (`state`), so a chunked decode equals the full decode while holding one chunk at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldforge.models.config import TokenizerConfig
from worldforge.models.tokenizers.frames import check_frames

State = dict  # module -> the past input frames it needs next chunk (streaming decode)


class CausalConv3d(nn.Module):
    """Conv3d, kernel (3, 3, 3), padded in time only with past frames: output t sees inputs <= t."""

    def __init__(self, cin: int, cout: int, time_stride: int = 1, space_stride: int = 1, kernel: int = 3):
        super().__init__()
        self.past = kernel - 1
        self.conv = nn.Conv3d(
            cin,
            cout,
            kernel,
            stride=(time_stride, space_stride, space_stride),
            padding=(0, kernel // 2, kernel // 2),
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, C', T / time_stride, H / space_stride, W / space_stride)
        if self.past:
            if state is not None and self in state:
                past = state[self]
            else:
                past = x[:, :, :1].expand(-1, -1, self.past, -1, -1)
            x = torch.cat([past, x], dim=2)
            if state is not None:
                state[self] = x[:, :, -self.past :]
        return self.conv(x)


class FrameNorm(nn.GroupNorm):
    """GroupNorm over (C, H, W) of each frame separately, so that it stays causal in time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(super().forward(x), "(b t) c h w -> b c t h w", b=b)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = FrameNorm(min(32, cin // 4), cin)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = FrameNorm(min(32, cout // 4), cout)
        self.conv2 = CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W, and T when `time` (T = 1 + 2k -> 1 + k: frame 0 stays alone)."""

    def __init__(self, channels: int, time: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, time_stride=2 if time else 1, space_stride=2)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return self.conv(x)  # encoding is not streamed


class Upsample(nn.Module):
    """Double H and W, and T when `time`: latent frame 0 -> 1 frame, every later one -> 2 frames."""

    def __init__(self, channels: int, time: bool):
        super().__init__()
        self.time = time
        self.time_conv = CausalConv3d(channels, 2 * channels) if time else None
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        if self.time:
            # (B, C, T, H, W) -> (B, 2C, T, H, W) -> (B, C, 2T, H, W)
            x = rearrange(self.time_conv(x, state), "b (r c) t h w -> b c (t r) h w", r=2)
            first_chunk = state is None or self not in state
            if first_chunk:
                x = x[:, :, 1:]  # frame 0 of the stream expands to one frame, not two
            if state is not None:
                state[self] = True
        b = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = rearrange(F.interpolate(x, scale_factor=2.0, mode="nearest"), "(b t) c h w -> b c t h w", b=b)
        return self.conv(x, state)


def level_channels(config: TokenizerConfig) -> list[int]:
    """Channels at each resolution level, full resolution first: base, 2 base, 4 base, 4 base..."""
    levels = int(math.log2(config.spatial_compression))
    return [config.base_channels * min(2**i, 4) for i in range(levels + 1)]


class Encoder(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        channels = level_channels(config)
        levels = len(channels) - 1
        time_levels = int(math.log2(config.temporal_compression))  # the deepest levels compress time
        self.conv_in = CausalConv3d(config.frame_channels, channels[0])
        layers: list[nn.Module] = []
        c = channels[0]
        for i in range(levels):
            for _ in range(config.res_blocks):
                layers.append(ResBlock(c, channels[i]))
                c = channels[i]
            layers.append(Downsample(c, time=i >= levels - time_levels))
        layers.append(ResBlock(c, channels[-1]))
        self.layers = nn.ModuleList(layers)
        self.norm_out = FrameNorm(min(32, channels[-1] // 4), channels[-1])
        self.conv_out = CausalConv3d(channels[-1], 2 * config.latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, 2c, T', H/s, W/s): posterior mean and log-variance
        x = self.conv_in(x)
        for layer in self.layers:
            x = layer(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        channels = level_channels(config)
        levels = len(channels) - 1
        time_levels = int(math.log2(config.temporal_compression))
        c = channels[-1]
        self.conv_in = CausalConv3d(config.latent_channels, c)
        layers: list[nn.Module] = [ResBlock(c, c)]
        for i in reversed(range(levels)):
            layers.append(Upsample(c, time=i >= levels - time_levels))
            for _ in range(config.res_blocks):
                layers.append(ResBlock(c, channels[i]))
                c = channels[i]
        self.layers = nn.ModuleList(layers)
        self.norm_out = FrameNorm(min(32, c // 4), c)
        self.conv_out = CausalConv3d(c, config.frame_channels)

    def forward(self, z: torch.Tensor, state: State | None = None) -> torch.Tensor:
        # (B, c, T', h, w) -> (B, C, T, H, W)
        x = self.conv_in(z, state)
        for layer in self.layers:
            x = layer(x, state)
        return self.conv_out(F.silu(self.norm_out(x)), state)


class CausalVAE(nn.Module):
    """KL-regularised causal video VAE. Latents are `posterior mean * latent_scale`."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.frames_per_latent = config.temporal_compression
        self.latent_channels = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def latent_frames(self, frames: int) -> int:
        return 1 + (frames - 1) // self.frames_per_latent

    def posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C, H, W) -> mean, logvar, each (B, T', c, h, w) (unscaled)."""
        check_frames(frames, self.config.spatial_compression, self.frames_per_latent)
        moments = self.encoder(rearrange(frames, "b t c h w -> b c t h w"))
        mean, logvar = rearrange(moments, "b (two c) t h w -> two b t c h w", two=2)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.posterior(frames)[0] * self.config.latent_scale

    def decode(self, latents: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """(B, T', c, h, w) -> (B, T, C, H, W); `chunk` latent frames at a time (same result)."""
        z = rearrange(latents / self.config.latent_scale, "b t c h w -> b c t h w")
        if chunk is None or chunk >= z.shape[2]:
            x = self.decoder(z)
        else:
            state: State = {}
            x = torch.cat([self.decoder(part, state) for part in z.split(chunk, dim=2)], dim=2)
        return rearrange(x, "b c t h w -> b t c h w")
