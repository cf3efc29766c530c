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

`sampler.palette_counts` also bounds how much of each colour a generated frame may hold: at most
that factor times the most pixels any one context frame gave it. A sprite world's objects keep
their size, so a colour that spreads beyond its amount is an object grown or trailed; its pixels
farthest from the colour go to their next nearest colour instead, and the object keeps the body
the network drew most surely.

`sampler.palette_background` holds a still background: a colour that covers at least that share
of a context frame is background, each pixel remembers the background colour it last showed, and
wherever the network draws a background colour the pixel takes the one it remembers. The network
then only decides where the objects are; a stripe cannot be torn into its neighbour's colour.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

FAR = 1.0e4  # the distance to a padding slot: never the nearest colour


class Palette(NamedTuple):
    """What a rollout redraws its frames with (`streaming.context_palette`), in `snap`'s order."""

    table: torch.Tensor  # (B, K, C) the context's colours
    usable: torch.Tensor  # (B,) bool: the clip has a palette
    caps: torch.Tensor | None = None  # (B, K) sampler.palette_counts: most pixels a colour may cover
    background: torch.Tensor | None = None  # (B, K) bool, sampler.palette_background: background colours
    memory: torch.Tensor | None = None  # (B, H W) each pixel's last background colour (updated in place)


def palettes(frames: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The colours of each clip's frames, as 8-bit values on the [-1, 1] scale (a channel's 256
    levels, as the datasets store frames).

    frames: (B, T, C, H, W) in [-1, 1]. Returns (B, K, C) colours (padded with FAR beyond each
    clip's own count), (B,) bool: whether the clip has at most `limit` colours (a palette),
    (B, K) int64: the most pixels one frame of the clip holds of each colour (0 for padding), and
    (B, T, H W) int64: each pixel's colour, its index in the table (0 in clips without a palette)."""
    if frames.ndim != 5:
        raise ValueError(f"sampler.palette needs frames (B, T, C, H, W), got {tuple(frames.shape)}")
    channels = frames.shape[2]
    if channels > 7:
        raise ValueError(f"sampler.palette: frames of {channels} channels; a palette needs at most 7")
    levels = torch.round((frames.float().clamp(-1, 1) + 1) * 127.5).to(torch.int64)
    # each colour as one integer (base 256): unique() on integers, 40x faster than on rows
    place = 256 ** torch.arange(channels, device=frames.device)
    codes = (levels.permute(0, 1, 3, 4, 2) * place).sum(dim=-1).flatten(2)  # (B, T, H W)
    found = [row.unique(return_inverse=True) for row in codes]  # each clip's codes, and each pixel's
    size = max(min(len(unique), limit) for unique, _ in found)
    table = frames.new_full((len(found), max(size, 1), channels), FAR, dtype=torch.float32)
    usable = torch.zeros(len(found), dtype=torch.bool, device=frames.device)
    amounts = torch.zeros(len(found), max(size, 1), dtype=torch.int64, device=frames.device)
    pixels = torch.zeros_like(codes)  # (B, T, H W)
    for index, (unique, inverse) in enumerate(found):
        if len(unique) <= limit:
            table[index, : len(unique)] = (unique[:, None] // place % 256).float() / 127.5 - 1
            usable[index] = True
            pixels[index] = inverse
            per_frame = torch.zeros(inverse.shape[0], len(unique), dtype=torch.int64, device=frames.device)
            per_frame.scatter_add_(1, inverse, torch.ones_like(inverse))
            amounts[index, : len(unique)] = per_frame.amax(dim=0)
    return table, usable, amounts, pixels


def capped_nearest(distance: torch.Tensor, caps: torch.Tensor, passes: int = 8) -> torch.Tensor:
    """The nearest colour of each pixel, with at most `caps` pixels a colour: distance (B, N, K) from
    every pixel to every colour, caps (B, K). A colour's pixels beyond its cap, those farthest from
    it, take their next nearest colour; repeated while any colour overflows (`passes` at most). A
    pixel never moves past its clip's last colour (capped above 0: padding slots have cap 0), so a
    colour may stay over its cap where the caps leave no room."""
    n = distance.shape[1]
    near, colours = distance.sort(dim=-1)  # (B, N, K): each pixel's colours, nearest first
    # distances as integers (1e-6 apart), so that one integer sort orders pixels by colour, then distance
    near = (near.clamp(0, FAR) * 1e6).to(torch.int64)
    shift = int(FAR * 1e6) + 1
    last = (caps > 0).sum(dim=1, keepdim=True) - 1  # (B, 1): the clip's own colours end there
    choice = torch.zeros(distance.shape[:2], dtype=torch.int64, device=distance.device)  # (B, N)
    positions = torch.arange(n, device=distance.device)
    for _ in range(passes):
        nearest = colours.gather(2, choice[..., None])[..., 0]  # (B, N)
        counts = torch.zeros_like(caps).scatter_add_(1, nearest, torch.ones_like(nearest))  # (B, K)
        if not (counts > caps).any():
            break
        # each pixel's rank among the pixels of its colour, nearest first
        order = (nearest * shift + near.gather(2, choice[..., None])[..., 0]).argsort(dim=1)
        starts = counts.cumsum(dim=1) - counts
        rank = torch.empty_like(order).scatter_(1, order, positions - starts.gather(1, nearest.gather(1, order)))
        moved = (rank >= caps.gather(1, nearest)) & (choice < last)
        if not moved.any():
            break
        choice = choice + moved.long()
    return colours.gather(2, choice[..., None])[..., 0]


def snap(
    frames: torch.Tensor,
    table: torch.Tensor,
    usable: torch.Tensor,
    caps: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    memory: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each pixel of `frames` (B, T, C, H, W) replaced by its nearest colour of its clip's `table`
    (from `palettes`); clips without a palette (`usable` False) are returned as they were. With
    `caps` (B, K), each frame holds at most that many pixels of a colour (`capped_nearest`). With
    `background` (B, K) bool and `memory` (B, H W) (`background_memory`; one frame, T = 1), a pixel
    drawn in any background colour takes the background colour it last had, and `memory` learns
    the pixels it did not know."""
    b, t, c, h, w = frames.shape
    pixels = frames.float().permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
    # |p - q|^2 = |p|^2 - 2 p.q + |q|^2; |p|^2 is the same for every colour q: one batched matmul
    # (half of torch.cdist's time for a 32x32 frame)
    squared = (table**2).sum(dim=-1)[:, None, :]  # (B, 1, K)
    distance = torch.baddbmm(squared, pixels, table.transpose(1, 2), alpha=-2)  # (B, T H W, K)
    if caps is None:
        nearest = distance.argmin(dim=-1)  # (B, T H W)
    else:  # ranks across pixels need each pixel's own |p|^2; one frame at a time
        distance = distance + (pixels**2).sum(dim=-1, keepdim=True)
        per_frame = distance.reshape(b * t, h * w, -1)
        nearest = capped_nearest(per_frame, caps.repeat_interleave(t, dim=0)).reshape(b, t * h * w)
    if background is not None and memory is not None:
        if t != 1:
            raise ValueError(f"palette.snap with a background memory takes one frame at a time, got {t}")
        ground = background.gather(1, nearest)  # (B, H W): drawn in a background colour
        known = memory >= 0
        nearest = torch.where(ground & known, memory, nearest)
        memory.copy_(torch.where(ground & ~known, nearest, memory))
    drawn = torch.gather(table, 1, nearest[..., None].expand(-1, -1, c))
    drawn = torch.where(usable[:, None, None], drawn, pixels)
    return drawn.reshape(b, t, h, w, c).permute(0, 1, 4, 2, 3).to(frames.dtype).contiguous()


def background_memory(pixels: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(B, H W) int64: each pixel's last background colour in frames whose pixels' colours are
    `pixels` (B, T, H W) (`palettes`' table indices), -1 where it never showed one."""
    memory = torch.full_like(pixels[:, 0], -1)
    for step in range(pixels.shape[1]):
        ground = background.gather(1, pixels[:, step])
        memory = torch.where(ground, pixels[:, step], memory)
    return memory
