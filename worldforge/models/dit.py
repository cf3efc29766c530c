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

With `model.action_history` K > 1, each latent frame also gets the conditioning of the K - 1
latent frames before it, newest first ("no action" before frame 0): the slots of lag k are the
actions that led to frame j - k.

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
from worldforge.models.flow import previous_frames


def no_action(condition: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The "no action" conditioning in the shape of `condition` (from `action_condition`): what the
    first frame always gets, and a frame dropped by `objective.action_dropout`."""
    if config.action_space == "discrete":
        return torch.full_like(condition, config.num_actions)
    return torch.zeros_like(condition)


def action_condition(
    actions: torch.Tensor, latent_frames: int, frames_per_latent: int, config: ModelConfig
) -> torch.Tensor:
    """Data-convention actions -> the conditioning of each latent frame (see the module docstring).

    actions: (B, T) int64 in [0, num_actions) or (B, T, A) float; action t taken after frame t.
    Uses actions 0 .. (latent_frames - 1) r - 1; later ones are ignored.
    Returns (B, T', K r) int64, `num_actions` meaning "no action", or (B, T', K r, A + 1) float
    whose last channel is 1 for a real action and 0 for "no action" (then the vector is zeros);
    K = `model.action_history`, slots [k r, (k + 1) r) the actions that led to frame j - k."""
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
        # The range check reads values on the host: free for CPU tensors, a device synchronisation
        # on an accelerator, where it is done once per rollout (`streaming.rollout`) and by the
        # loader's sample checks instead of in every denoising step.
        if (
            taken.numel()
            and taken.device.type == "cpu"
            and (int(taken.min()) < 0 or int(taken.max()) >= config.num_actions)
        ):
            raise ModelConfigError(
                f"discrete actions must lie in [0, {config.num_actions}) (model.num_actions), "
                f"got values in [{int(taken.min())}, {int(taken.max())}]"
            )
        none = no_action(taken.new_zeros((b, r), dtype=torch.long), config)
        return _with_history(torch.cat([none, taken.long()], dim=1).view(b, latent_frames, r), config)
    flagged = torch.cat([taken.float(), taken.new_ones(b, needed, 1, dtype=torch.float32)], dim=-1)
    none = no_action(flagged.new_zeros(b, r, config.action_dim + 1), config)
    condition = torch.cat([none, flagged], dim=1).view(b, latent_frames, r, config.action_dim + 1)
    return _with_history(condition, config)


def _with_history(condition: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, T', r[, A + 1]) -> (B, T', K r[, A + 1]): each frame's slots followed by those of the
    K - 1 frames before it, "no action" where there is none."""
    lags = config.action_history
    if lags == 1:
        return condition
    frames = condition.shape[1]
    none = no_action(condition[:, :1], config).expand(-1, lags - 1, *condition.shape[2:])
    padded = torch.cat([none, condition], dim=1)  # (B, K - 1 + T', r[, A + 1])
    shifted = [padded[:, lags - 1 - k : lags - 1 - k + frames] for k in range(lags)]
    return torch.cat(shifted, dim=2)


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
        self.slots = frames_per_latent * config.action_history
        if self.discrete:
            self.table_size = config.num_actions + 1  # the last row is "no action"
            self.embedding = nn.Embedding(self.slots * self.table_size, width)
        else:
            self.fc1 = nn.Linear(self.slots * (config.action_dim + 1), width)
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

    def forward(self, x, c, rope, mask, cache: KVCache | None = None, index: int = 0, commit: int = 0):
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


# The conv stem and head compute in channels-last layout: oneDNN's convolutions with few channels run
# about 1.8x faster on CPU that way (forward and backward), a quickstart training step 1.11x
# (benchmarks/conv_layout.py).
CONV_LAYOUT = torch.channels_last


class ConvStem(nn.Module):
    """`model.stem='conv'`: a residual 3x3 conv layer at latent resolution, then a p x p patchify conv.

    (B T, C_in, h p, w p) -> tokens (B T, h w, D) and the stem's feature map (B T, S, h p, w p), which
    the head takes as a skip connection."""

    def __init__(self, in_channels: int, channels: int, width: int, patch: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.proj = nn.Conv2d(channels, width, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv_in(x.contiguous(memory_format=CONV_LAYOUT))
        features = features + self.conv(F.gelu(features))
        tokens = self.proj(F.gelu(features))  # (B T, D, h, w)
        return tokens.flatten(2).transpose(1, 2), features


class ConvHead(nn.Module):
    """The unpatchified output (B T, S, h p, w p) and the stem's features -> (B T, C, h p, w p)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.gelu(torch.cat([x, skip], dim=1).contiguous(memory_format=CONV_LAYOUT)))
        return self.conv_out(F.gelu(h)).contiguous()


class FinalLayer(nn.Module):
    """AdaLN-modulated output projection per token; with the conv stem, a conv head after it."""

    def __init__(self, width: int, out_features: int, head: ConvHead | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out_features)
        self.head = head

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # (B, T, N, D) -> (B, T, N, p p C) (linear stem) or (B, T, N, p p S) (conv stem, before the head)
        shift, scale = self.adaln(c).unsqueeze(2).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


def pair_mask(frames: int, tokens_per_frame: int, window: int, device) -> torch.Tensor:
    """Boolean (2 T N, 2 T N) mask of a teacher-forced sequence: T context frames, then T noisy ones.

    Context frame f sees context frames f - window < g <= f; noisy frame f sees context frames
    f - window < g < f and itself: exactly what a KV-cached rollout step sees (`WorldDiT.forward`)."""
    f = torch.arange(frames)
    recent = (f[None, :] > f[:, None] - window) & (f[None, :] <= f[:, None])  # (T, T): query, key
    allowed = torch.cat(
        [
            torch.cat([recent, torch.zeros(frames, frames, dtype=torch.bool)], dim=1),
            torch.cat([recent & (f[None, :] < f[:, None]), torch.eye(frames, dtype=torch.bool)], dim=1),
        ]
    )  # (2T, 2T)
    return (
        allowed.to(device).repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
    )


class WorldDiT(nn.Module):
    def __init__(self, config: ModelConfig, latent_channels: int, frames_per_latent: int = 1):
        super().__init__()
        config = config.resolved()
        self.config = config
        self.latent_channels = latent_channels
        self.patch = config.patch_size
        self.window = config.context_window
        width, p = config.width, config.patch_size
        in_channels = latent_channels * (1 + config.stack_previous)
        out_channels = latent_channels + (2 if config.warp else 0)  # model.warp: + a motion field (dx, dy)
        if config.stem == "conv":
            channels = config.stem_channels
            self.patch_embed = ConvStem(in_channels, channels, width, p)
            self.final = FinalLayer(width, channels * p * p, ConvHead(channels, out_channels))
        else:
            self.patch_embed = nn.Linear(in_channels * p * p, width)
            self.final = FinalLayer(width, out_channels * p * p)
        self.t_embed = TimestepEmbed(width)
        self.action_embed = ActionEmbed(config, width, frames_per_latent)
        self.blocks = nn.ModuleList(
            Block(width, heads, config.head_dim, hidden, config.qk_norm)
            for heads, hidden in zip(config.heads_per_block, config.mlp_hidden_per_block)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT init: Xavier linears, small embeddings, zero AdaLN and output (blocks start as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        zeroed = [block.adaln for block in self.blocks] + [self.final.adaln, self.final.linear]
        if self.final.head is not None:
            zeroed.append(self.final.head.conv_out)
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks), max_frames=self.window - 1)

    def _embed(self, latents: torch.Tensor, anchor: torch.Tensor | None):
        """(B, T, C, h p, w p) latents -> tokens (B, T, N, D) and the conv stem's skip (None: linear)."""
        b, t = latents.shape[:2]
        p = self.patch
        if latents.shape[-2] % p or latents.shape[-1] % p:
            raise ModelConfigError(
                f"latent size {latents.shape[-2]}x{latents.shape[-1]} is not divisible by model.patch_size {p}"
            )
        stacked = self.config.stack_previous
        if stacked:
            if anchor is None or anchor.shape[2] < stacked * latents.shape[2]:
                raise ModelConfigError(
                    f"model.stack_previous={stacked}: the DiT needs each frame's {stacked} previous clean latent "
                    "frames (anchor=, from WorldModel.anchors)"
                )
            latents = torch.cat([latents, anchor[:, :, : stacked * latents.shape[2]].to(latents.dtype)], dim=2)
        if self.final.head is None:
            # (B, T, C, h p, w p) -> (B, T, N, C p p) -> (B, T, N, D)
            return self.patch_embed(
                rearrange(latents, "b t c (h p1) (w p2) -> b t (h w) (c p1 p2)", p1=p, p2=p)
            ), None
        tokens, skip = self.patch_embed(latents.flatten(0, 1))  # (B T, N, D), (B T, S, h p, w p)
        return tokens.unflatten(0, (b, t)), skip

    def _condition(self, noise_levels: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The per-frame AdaLN conditioning (B, T, D), after SiLU: noise level + action."""
        return F.silu(self.t_embed(noise_levels) + self.action_embed(actions))

    def _output(self, x: torch.Tensor, c: torch.Tensor, skip: torch.Tensor | None, h: int, w: int) -> torch.Tensor:
        """Tokens (B, T, N, D) -> (B, T, C, h p, w p)."""
        b, t = x.shape[:2]
        p = self.patch
        out = self.final(x, c)  # (B, T, N, p p C) or (B, T, N, p p S)
        if skip is None:
            return rearrange(out, "b t (h w) (c p1 p2) -> b t c (h p1) (w p2)", h=h, p1=p, p2=p)
        out = rearrange(out, "b t (h w) (s p1 p2) -> (b t) s (h p1) (w p2)", h=h, p1=p, p2=p)
        return self.final.head(out, skip).unflatten(0, (b, t))

    def _blocks(self, x, c, rope, mask, cache: KVCache | None = None, commit: int = 0) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            if self.config.grad_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, c, rope, mask, use_reentrant=False)
            else:
                x = block(x, c, rope, mask, cache, index, commit)
        return x

    def forward(
        self,
        latents: torch.Tensor,
        noise_levels: torch.Tensor,
        actions: torch.Tensor,
        cache: KVCache | None = None,
        commit: int = 0,
        first_frame: int = 0,
        anchor: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Network output (velocity or x0, see ObjectiveConfig.prediction) for every frame.

        latents: (B, T, C, h, w) noisy latents; noise_levels: (B, T) in [0, 1]; actions: the
        conditioning from `action_condition`, (B, T, r) or (B, T, r, A + 1); anchor: (B, T, k C, h, w)
        each frame's previous clean latent frames, newest first (needed with `model.stack_previous`).
        Without a cache the frames sit at absolute positions first_frame .. first_frame + T - 1.
        With a cache they follow the frames it holds (from `cache.next_frame`) and attend to them;
        `commit=k` appends the keys/values of the first k frames, making them context for later
        calls. A committed frame's output is not drawn (nothing reads it), so with k < T one call
        can commit a frame and draw the next (a rollout's fused commit); with k = T it returns None.
        Returns (B, T - k, C, h, w), with `model.warp` (B, T - k, C + 2, h, w): the motion field last."""
        b, t, _, height, width = latents.shape
        if isinstance(commit, bool) or not 0 <= commit <= t or (commit and cache is None):
            raise ModelConfigError(f"commit={commit!r}: the number of leading frames (0..{t}) joining a KV cache")
        h, w = height // self.patch, width // self.patch
        x, skip = self._embed(latents, anchor)  # (B, T, N, D)
        c = self._condition(noise_levels, actions)  # (B, T, D)
        if cache is not None:
            first_frame = cache.next_frame
            key_first, key_frames = cache.first_frame, cache.frames + t
        else:
            key_first, key_frames = first_frame, t
        rope = rope_tables(self.config.head_dim, first_frame, t, h, w, latents.device)
        mask = frame_mask(first_frame, t, key_first, key_frames, h * w, self.window, latents.device)
        x = self._blocks(x, c, rope, mask, cache, commit)
        if commit:
            cache.advance(commit)
            if commit == t:
                return None
            x, c = x[:, commit:], c[:, commit:]
            if skip is not None:
                skip = skip.unflatten(0, (b, t))[:, commit:].flatten(0, 1)
        return self._output(x, c, skip, h, w)

    def forward_teacher_forced(
        self,
        noisy: torch.Tensor,
        noise_levels: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor,
        context_level: float = 0.0,
    ) -> torch.Tensor:
        """Every frame predicted as a rollout predicts it, all in one pass: noisy frame f attends to
        the context frames before it (within the window) and to itself, never to other noisy frames.

        noisy: (B, T, C, h, w) frames to denoise at noise_levels (B, T); context: (B, T, C, h, w) the
        frames a rollout would have committed (ground truth, or the model's own rollout), at level
        `context_level`; actions as `forward`. Each frame's anchor is the context frame before it.
        Returns the output for the noisy frames, (B, T, C, h, w)."""
        b, t, _, height, width = noisy.shape
        h, w = height // self.patch, width // self.patch
        anchor = previous_frames(context, self.config.anchor_frames)
        levels = torch.cat([noise_levels.new_full((b, t), context_level), noise_levels], dim=1)
        x, skip = self._embed(torch.cat([context, noisy], dim=1), torch.cat([anchor, anchor], dim=1))
        c = self._condition(levels, torch.cat([actions, actions], dim=1))  # (B, 2T, D)
        cos, sin = rope_tables(self.config.head_dim, 0, t, h, w, noisy.device)
        rope = (torch.cat([cos, cos]), torch.cat([sin, sin]))
        x = self._blocks(x, c, rope, pair_mask(t, h * w, self.window, noisy.device))
        if skip is not None:
            skip = skip.unflatten(0, (b, 2 * t))[:, t:].flatten(0, 1)
        return self._output(x[:, t:], c[:, t:], skip, h, w)
