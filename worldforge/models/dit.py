"""The world DiT: a transformer over latent tokens with block-causal attention over frames.

Each latent frame is patch-embedded into N = (h / p)(w / p) tokens. Every frame carries its own
conditioning vector, the sum of its noise-level embedding and its action embedding, which
modulates every block through AdaLN-zero (shift, scale, gate per frame). Attention uses 3D RoPE
and lets a frame see itself and the `context_window - 1` frames before it, never later ones.

Action alignment: frame t is the consequence of action t - 1, so it is conditioned on action
t - 1; frame 0 on a learned "no action". With a tokenizer that packs r frames into one latent
frame, latent frame j >= 1 is conditioned on the r actions that led to its frames
(actions r(j-1) .. rj - 1) and latent frame 0 on r "no action" slots. `action_condition` builds
this from data-convention actions (action t taken after frame t is seen).

Submodule names are stable for compression: `patch_embed`, `t_embed`, `action_embed`,
`blocks.{i}.adaln`, `blocks.{i}.attn.{qkv,proj}`, `blocks.{i}.mlp.{fc1,fc2}`, `final`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from worldforge.models.attention import Attention, KVCache, frame_mask, rope_tables
from worldforge.models.config import ModelConfig, ModelConfigError


def action_condition(
    actions: torch.Tensor, latent_frames: int, frames_per_latent: int, config: ModelConfig
) -> torch.Tensor:
    """Data-convention actions -> the conditioning of each latent frame (see the module docstring).

    actions: (B, T) int64 in [0, num_actions) or (B, T, A) float; action t taken after frame t.
    Uses actions 0 .. (latent_frames - 1) r - 1; later ones are ignored.
    Returns (B, T', r) int64, `num_actions` meaning "no action", or (B, T', r, A + 1) float whose
    last channel is 1 for a real action and 0 for "no action" (then the vector is zeros)."""
    r = frames_per_latent
    needed = (latent_frames - 1) * r
    b = actions.shape[0]
    if config.action_space == "discrete":
        if actions.ndim != 2 or actions.is_floating_point():
            raise ModelConfigError(
                f"discrete actions must be (B, T) integers, got {tuple(actions.shape)} {actions.dtype}"
            )
    elif actions.ndim != 3 or actions.shape[-1] != config.action_dim:
        raise ModelConfigError(
            f"continuous actions must be (B, T, {config.action_dim}) floats, got {tuple(actions.shape)}"
        )
    if actions.shape[1] < needed:
        raise ModelConfigError(
            f"{latent_frames} latent frames need at least {needed} actions, got {actions.shape[1]}"
        )
    taken = actions[:, :needed]
    if config.action_space == "discrete":
        if (
            taken.numel()
            and not taken.is_meta
            and (int(taken.min()) < 0 or int(taken.max()) >= config.num_actions)
        ):
            raise ModelConfigError(
                f"discrete actions must lie in [0, {config.num_actions}) (model.num_actions), "
                f"got values in [{int(taken.min())}, {int(taken.max())}]"
            )
        none = taken.new_full((b, r), config.num_actions)
        return torch.cat([none, taken.long()], dim=1).view(b, latent_frames, r)
    flagged = torch.cat([taken.float(), taken.new_ones(b, needed, 1, dtype=torch.float32)], dim=-1)
    none = flagged.new_zeros(b, r, config.action_dim + 1)
    return torch.cat([none, flagged], dim=1).view(b, latent_frames, r, config.action_dim + 1)


class TimestepEmbed(nn.Module):
    """Noise level t in [0, 1] -> (sinusoidal features of 1000 t) -> MLP -> width."""

    def __init__(self, width: int, features: int = 256):
        super().__init__()
        self.features = features
        self.fc1 = nn.Linear(features, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # (B, T) -> (B, T, D)
        half = self.features // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = 1000.0 * t.float()[..., None] * freqs
        features = torch.cat([args.cos(), args.sin()], dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(features)))


class ActionEmbed(nn.Module):
    """Action conditioning (from `action_condition`) -> width, one vector per latent frame."""

    def __init__(self, config: ModelConfig, width: int, frames_per_latent: int):
        super().__init__()
        self.discrete = config.action_space == "discrete"
        self.slots = frames_per_latent
        if self.discrete:
            self.table_size = config.num_actions + 1  # the last row is "no action"
            self.embedding = nn.Embedding(frames_per_latent * self.table_size, width)
        else:
            self.fc1 = nn.Linear(frames_per_latent * (config.action_dim + 1), width)
            self.fc2 = nn.Linear(width, width)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        # (B, T, r) int64 | (B, T, r, A + 1) float -> (B, T, D)
        if self.discrete:
            slot = torch.arange(self.slots, device=condition.device) * self.table_size
            return self.embedding(condition + slot).sum(dim=2)
        x = condition.flatten(2).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(x)))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block with per-frame AdaLN-zero modulation."""

    def __init__(self, width: int, heads: int, head_dim: int, mlp_hidden: int, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, head_dim, qk_norm)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, mlp_hidden)
        self.adaln = nn.Linear(width, 6 * width)

    def forward(self, x, c, rope, mask, cache: KVCache | None = None, index: int = 0, commit: bool = False):
        # x (B, T, N, D); c (B, T, D), already through SiLU
        b, t, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            self.adaln(c).unsqueeze(2).chunk(6, dim=-1)
        )  # (B, T, 1, D)
        h = self.norm1(x) * (1 + scale1) + shift1
        h = self.attn(h.reshape(b, t * n, d), rope, mask, cache, index, commit, tokens_per_frame=n)
        x = x + gate1 * h.view(b, t, n, d)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # (B, T, N, D) -> (B, T, N, p p C)
        shift, scale = self.adaln(c).unsqueeze(2).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class WorldDiT(nn.Module):
    def __init__(self, config: ModelConfig, latent_channels: int, frames_per_latent: int = 1):
        super().__init__()
        config = config.resolved()
        self.config = config
        self.latent_channels = latent_channels
        self.patch = config.patch_size
        self.window = config.context_window
        width, p = config.width, config.patch_size
        self.patch_embed = nn.Linear(latent_channels * p * p, width)
        self.t_embed = TimestepEmbed(width)
        self.action_embed = ActionEmbed(config, width, frames_per_latent)
        self.blocks = nn.ModuleList(
            Block(width, heads, config.head_dim, hidden, config.qk_norm)
            for heads, hidden in zip(config.heads_per_block, config.mlp_hidden_per_block)
        )
        self.final = FinalLayer(width, latent_channels * p * p)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT init: Xavier linears, small embeddings, zero AdaLN and output (blocks start as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaln.weight)
            nn.init.zeros_(block.adaln.bias)
        for layer in (self.final.adaln, self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks), max_frames=self.window - 1)

    def forward(
        self,
        latents: torch.Tensor,
        noise_levels: torch.Tensor,
        actions: torch.Tensor,
        cache: KVCache | None = None,
        commit: bool = False,
        first_frame: int = 0,
    ) -> torch.Tensor:
        """Network output (velocity or x0, see ObjectiveConfig.prediction) for every frame.

        latents: (B, T, C, h, w) noisy latents; noise_levels: (B, T) in [0, 1]; actions: the
        conditioning from `action_condition`, (B, T, r) or (B, T, r, A + 1).
        Without a cache the frames sit at absolute positions first_frame .. first_frame + T - 1.
        With a cache they follow the frames it holds (from `cache.next_frame`) and attend to them;
        `commit=True` appends their keys/values, making them context for later calls.
        Returns (B, T, C, h, w)."""
        _, t, _, height, width = latents.shape
        p = self.patch
        if height % p or width % p:
            raise ModelConfigError(f"latent size {height}x{width} is not divisible by model.patch_size {p}")
        h, w = height // p, width // p
        # (B, T, C, h p, w p) -> (B, T, N, C p p) -> (B, T, N, D)
        x = self.patch_embed(rearrange(latents, "b t c (h p1) (w p2) -> b t (h w) (c p1 p2)", p1=p, p2=p))
        c = F.silu(self.t_embed(noise_levels) + self.action_embed(actions))  # (B, T, D)
        if cache is not None:
            first_frame = cache.next_frame
            key_first, key_frames = cache.first_frame, cache.frames + t
        else:
            key_first, key_frames = first_frame, t
        rope = rope_tables(self.config.head_dim, first_frame, t, h, w, latents.device)
        mask = frame_mask(first_frame, t, key_first, key_frames, h * w, self.window, latents.device)
        for index, block in enumerate(self.blocks):
            if self.config.grad_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, c, rope, mask, use_reentrant=False)
            else:
                x = block(x, c, rope, mask, cache, index, commit)
        if cache is not None and commit:
            cache.advance(t)
        out = self.final(x, c)  # (B, T, N, C p p)
        return rearrange(out, "b t (h w) (c p1 p2) -> b t c (h p1) (w p2)", h=h, p1=p, p2=p)
