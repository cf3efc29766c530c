"""`sampler.palette`: every generated frame redrawn in the colours of its rollout's context frames.

A world drawn from a few flat colours (the built-in simulator, most Atari games) has frames in
which every pixel is one of them. A generated frame's pixel that lies between two of them (a
ball's half-erased edge, a shade of two positions) is drawn in neither; fed back as context, such
pixels compound over a rollout into the smear that dissolves a world within a second of play.
With the palette on, each generated pixel is replaced by the nearest colour (in RGB) that the
context frames hold, before the frame joins the context, as a discrete tokenizer's decoder
draws from its codebook. What it does not mend is shape: an object the network draws grown or
trailed stays so, in hard edges (docs/world-model.md, block 17).

A context with more colours than `sampler.palette_max` (a photo, a gradient finer than the
frame) has no palette to speak of: its frames are left as drawn.
"""

from __future__ import annotations

import torch

FAR = 1.0e4  # the distance to a padding slot: never the nearest colour


def palettes(frames: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The colours of each clip's frames, as 8-bit values on the [-1, 1] scale (a channel's 256
    levels, as the datasets store frames).

    frames: (B, T, C, H, W) in [-1, 1]. Returns (B, K, C) colours (padded with FAR beyond each
    clip's own count) and (B,) bool: whether the clip has at most `limit` colours (a palette)."""
    if frames.ndim != 5:
        raise ValueError(f"sampler.palette needs frames (B, T, C, H, W), got {tuple(frames.shape)}")
    channels = frames.shape[2]
    if channels > 7:
        raise ValueError(f"sampler.palette: frames of {channels} channels; a palette needs at most 7")
    levels = torch.round((frames.float().clamp(-1, 1) + 1) * 127.5).to(torch.int64)
    # each colour as one integer (base 256): unique() on integers, 40x faster than on rows
    place = 256 ** torch.arange(channels, device=frames.device)
    codes = (levels.permute(0, 1, 3, 4, 2) * place).sum(dim=-1).flatten(1)  # (B, T H W)
    found = [(row.unique()[:, None] // place % 256).float() for row in codes]
    size = max(min(len(colours), limit) for colours in found)
    table = frames.new_full((len(found), max(size, 1), channels), FAR, dtype=torch.float32)
    usable = torch.zeros(len(found), dtype=torch.bool, device=frames.device)
    for index, colours in enumerate(found):
        if len(colours) <= limit:
            table[index, : len(colours)] = colours / 127.5 - 1
            usable[index] = True
    return table, usable


def snap(frames: torch.Tensor, table: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """Each pixel of `frames` (B, T, C, H, W) replaced by its nearest colour of its clip's `table`
    (from `palettes`); clips without a palette (`usable` False) are returned as they were."""
    b, t, c, h, w = frames.shape
    pixels = frames.float().permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
    # |p - q|^2 = |p|^2 - 2 p.q + |q|^2; |p|^2 is the same for every colour q: one batched matmul
    # (half of torch.cdist's time for a 32x32 frame)
    squared = (table**2).sum(dim=-1)[:, None, :]  # (B, 1, K)
    nearest = torch.baddbmm(squared, pixels, table.transpose(1, 2), alpha=-2).argmin(dim=-1)  # (B, T H W)
    drawn = torch.gather(table, 1, nearest[..., None].expand(-1, -1, c))
    drawn = torch.where(usable[:, None, None], drawn, pixels)
    return drawn.reshape(b, t, h, w, c).permute(0, 1, 4, 2, 3).to(frames.dtype).contiguous()
