"""Attention over latent tokens: 3D RoPE, the block-causal frame mask, and the KV cache.

Tokens are laid out frame by frame: token `f * N + (y * w + x)` is cell (y, x) of frame f, with
N = h * w tokens per frame. A token of frame q attends to every token of frame s when
`q - window < s <= q` (itself and the `window - 1` frames before it). The same rule holds in a
full forward and in a cached step, so a KV-cached rollout computes exactly what a full forward
over all frames computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROPE_THETA = 10000.0


def rope_tables(
    head_dim: int, first_frame: int, frames: int, height: int, width: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables, each (frames * height * width, head_dim), for the rotate-half convention.

    The head dimension is split between time, height and width: 2 (head_dim // 6) channels each
    for height and width, the rest (at least a third) for time. Frame positions are absolute
    (`first_frame + f`); attention scores depend only on differences, so a rollout may run past
    the clip length seen in training as long as the window does not."""
    space = 2 * (head_dim // 6)
    dims = (head_dim - 2 * space, space, space)  # (time, height, width), each even
    positions = torch.stack(
        torch.meshgrid(
            torch.arange(first_frame, first_frame + frames, device=device, dtype=torch.float32),
            torch.arange(height, device=device, dtype=torch.float32),
            torch.arange(width, device=device, dtype=torch.float32),
            indexing="ij",
        ),
        dim=-1,
    ).reshape(-1, 3)  # (L, 3)
    angles = []
    for axis, dim in enumerate(dims):
        if dim == 0:
            continue
        inverse = ROPE_THETA ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
        angles.append(positions[:, axis : axis + 1] * inverse)  # (L, dim / 2)
    angles = torch.cat(angles, dim=-1)  # (L, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (L, head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, H, L, hd); cos, sin (L, hd). Rotation computed in float32.
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


def frame_mask(
    query_first: int,
    query_frames: int,
    key_first: int,
    key_frames: int,
    tokens_per_frame: int,
    window: int,
    device,
) -> torch.Tensor | None:
    """Boolean (Lq, Lk) mask, True where a query token may attend to a key token; None if all may.

    Queries are frames query_first .. query_first + query_frames - 1, keys key_first .. (absolute)."""
    # Every key visible to every query, decided on Python ints: no tensor read back (a device sync,
    # and a graph break under torch.compile) in the rollout step.
    last_key, last_query = key_first + key_frames - 1, query_first + query_frames - 1
    if last_key <= query_first and key_first > last_query - window:
        return None
    q = torch.arange(query_first, query_first + query_frames, device="cpu")
    k = torch.arange(key_first, key_first + key_frames, device="cpu")
    allowed = (k[None, :] <= q[:, None]) & (k[None, :] > q[:, None] - window)  # (Tq, Tk)
    # Expanded on the device: only the small frame-level matrix crosses over.
    allowed = allowed.to(device)
    return allowed.repeat_interleave(tokens_per_frame, 0).repeat_interleave(
        tokens_per_frame, 1
    )  # (Tq N, Tk N)


class KVCache:
    """Keys and values (after RoPE) of committed context frames, per block.

    Holds at most `max_frames` frames (the context window minus one: the frame being generated
    is the last one of its window); committing more drops the oldest, so memory stays bounded."""

    def __init__(self, depth: int, max_frames: int):
        self.max_frames = max_frames
        self.keys: list[torch.Tensor | None] = [None] * depth
        self.values: list[torch.Tensor | None] = [None] * depth
        self.first_frame = 0  # absolute index of the oldest frame held
        self.frames = 0  # frames held

    @property
    def next_frame(self) -> int:
        """Absolute index of the next frame to be generated or committed."""
        return self.first_frame + self.frames

    def layer(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.keys[index], self.values[index]

    def store(self, index: int, keys: torch.Tensor, values: torch.Tensor, tokens_per_frame: int) -> None:
        """Keep the last `max_frames` frames of keys/values (B, H, L, hd) for block `index`."""
        start = max(0, keys.shape[2] - self.max_frames * tokens_per_frame)
        if start:  # a copy, so that the dropped frames' memory is freed
            keys, values = keys[:, :, start:].clone(), values[:, :, start:].clone()
        self.keys[index], self.values[index] = keys, values

    def advance(self, frames: int) -> None:
        total = self.frames + frames
        self.first_frame += max(0, total - self.max_frames)
        self.frames = min(total, self.max_frames)


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm and 3D RoPE; heads per block may differ (pruning)."""

    def __init__(self, width: int, heads: int, head_dim: int, qk_norm: bool = True):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(width, 3 * heads * head_dim)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(heads * head_dim, width)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        index: int = 0,
        commit: int = 0,
        tokens_per_frame: int = 1,
    ) -> torch.Tensor:
        """With a cache, x's frames attend to the frames it holds, and the first `commit` of them
        (all, or a leading part: a frame joining the context while the next is drawn) join it."""
        b, length, _ = x.shape
        # (B, L, D) -> 3 x (B, H, L, hd)
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        if cache is not None:
            past_k, past_v = cache.layer(index)
            if past_k is not None:
                k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, H, S, hd)
            if commit:
                kept = k.shape[2] - length + commit * tokens_per_frame  # past + the committed frames
                cache.store(index, k[:, :, :kept], v[:, :, :kept], tokens_per_frame)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, hd)
        return self.proj(out.transpose(1, 2).reshape(b, length, self.heads * self.head_dim))
