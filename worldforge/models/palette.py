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
of a context frame, or that reaches from one edge of a context frame to the opposite one (a
gradient's row, a stripe), is background; each pixel remembers the background colour it last
showed, and wherever the network draws a background colour the pixel takes the one it remembers.
The network then only decides where the objects are; a stripe cannot be torn into its neighbour's
colour.

`sampler.palette_sprites` keeps each object's shape: every colour that is not background and that
one context frame shows as one connected piece is a sprite of that shape (a ball's disc, the
agent's square). In each generated frame the sprite moves as far as the network moved its colour
(the centre of what it drew in that colour near the sprite, against the centre of the sprite as
last drawn), to a fraction of a cell, and is drawn whole at that position rounded to whole cells;
the network's other pixels of its colour become the background they remember. Where sprites
overlap, the one on top is the one whose colour the network has drawn more often where the two
overlapped so far in the rollout. The network decides where each object goes, whether it is still
there and which hides which; the shape is the context's. A sprite whose colour the network draws
nowhere within `SPRITE_REACH` stays where it was, and is gone after `SPRITE_PATIENCE` such frames
in a row; while it touches a sprite the network does draw, it is taken as hidden, not missed (two
objects that meet are often drawn as one). For sprite worlds: objects that keep their shape, one
object per colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

FAR = 1.0e4  # the distance to a padding slot: never the nearest colour
# _periodic_fill's shifts: along rows, columns and diagonals
_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
SPRITE_PATIENCE = 3  # sampler.palette_sprites: a sprite left undrawn this many frames in a row is gone
SPRITE_REACH = 0.1  # sampler.palette_sprites: a sprite moves at most this share of the frame's side per frame


@dataclass
class Sprites:
    """`sampler.palette_sprites`: a batch's objects, S over all its clips, each a colour always drawn
    in one shape (`find_sprites`); their places are updated as the rollout goes (`draw_sprites`)."""

    clip: torch.Tensor  # (S,) the clip each belongs to
    colour: torch.Tensor  # (S,) its index in the clip's palette table
    rows: torch.Tensor  # (S, N) its shape's cells, from the shape's top-left corner (N: the largest shape)
    cols: torch.Tensor  # (S, N)
    cells: torch.Tensor  # (S, N) bool: which of the N are cells of its shape
    size: torch.Tensor  # (S, 2) its shape's box, rows and columns
    position: torch.Tensor  # (S, 2) float: the box's top-left corner, to a fraction of a cell
    alive: torch.Tensor  # (S,) bool: still drawn (a sprite the network stops drawing is gone)
    missed: torch.Tensor  # (S,) int64: frames in a row it was drawn nowhere near, nor anything it touches
    owned: torch.Tensor  # (B, K) bool: the colours that are some sprite's (gone ones included)
    depth: torch.Tensor  # (S, S) float: [i, j], pixels where i and j overlapped and the network drew i

    @property
    def at(self) -> torch.Tensor:
        """(S, 2) the box's top-left cell where it is drawn: its position rounded."""
        return torch.round(self.position).long()


class Palette(NamedTuple):
    """What a rollout redraws its frames with (`frames_palette`), in `snap`'s order."""

    table: torch.Tensor  # (B, K, C) the context's colours
    usable: torch.Tensor  # (B,) bool: the clip has a palette
    caps: torch.Tensor | None = None  # (B, K) sampler.palette_counts: most pixels a colour may cover
    background: torch.Tensor | None = None  # (B, K) bool, sampler.palette_background: background colours
    memory: torch.Tensor | None = None  # (B, H W) each pixel's last background colour (updated in place)
    sprites: Sprites | None = None  # sampler.palette_sprites: the objects (updated as the rollout goes)


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
    nearest = distance.argmin(dim=-1)  # most frames hold no colour over its cap: no sorting for them
    if not (torch.zeros_like(caps).scatter_add_(1, nearest, torch.ones_like(nearest)) > caps).any():
        return nearest
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
    sprites: Sprites | None = None,
) -> torch.Tensor:
    """Each pixel of `frames` (B, T, C, H, W) replaced by its nearest colour of its clip's `table`
    (from `palettes`); clips without a palette (`usable` False) are returned as they were. With
    `caps` (B, K), each frame holds at most that many pixels of a colour (`capped_nearest`). With
    `background` (B, K) bool and `memory` (B, H W) (`background_memory`; one frame, T = 1), a pixel
    drawn in any background colour takes the background colour it last had, and `memory` learns
    the pixels it did not know. With `sprites` (`find_sprites`; and a memory) each sprite is moved
    whole to where the network drew its colour (`draw_sprites`)."""
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
        if sprites is not None:
            nearest = draw_sprites(nearest, sprites, memory, (h, w))
    drawn = torch.gather(table, 1, nearest[..., None].expand(-1, -1, c))
    drawn = torch.where(usable[:, None, None], drawn, pixels)
    return drawn.reshape(b, t, h, w, c).permute(0, 1, 4, 2, 3).to(frames.dtype).contiguous()


def background_colours(
    pixels: torch.Tensor, amounts: torch.Tensor, share: float, size: tuple[int, int]
) -> torch.Tensor:
    """`sampler.palette_background`: (B, K) bool, the colours of each clip's context that are
    background: those covering at least `share` of a context frame (`amounts`, from `palettes`), and
    those that some context frame shows reaching from one edge of the frame to the opposite one (a
    gradient's row or column, a stripe: each covers little of a frame, but no object of a sprite world
    spans it). `pixels` (B, T, H W): the context frames' colours (`palettes`' table indices)."""
    h, w = size
    b, t, n = pixels.shape
    k = amounts.shape[1]
    index = pixels.reshape(b * t, n)
    cells = torch.arange(n, device=pixels.device)

    def extent(coordinate: torch.Tensor, reduce: str, start: int) -> torch.Tensor:
        out = torch.full((b * t, k), start, dtype=torch.int64, device=pixels.device)
        return out.scatter_reduce_(1, index, coordinate.expand(b * t, n), reduce)

    rows, cols = cells // w, cells % w
    tall = (extent(rows, "amin", h) == 0) & (extent(rows, "amax", -1) == h - 1)
    wide = (extent(cols, "amin", w) == 0) & (extent(cols, "amax", -1) == w - 1)
    spans = (tall | wide).view(b, t, k).any(dim=1)
    return (amounts >= share * n) | spans


def background_memory(pixels: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(B, H W) int64: each pixel's last background colour in frames whose pixels' colours are
    `pixels` (B, T, H W) (`palettes`' table indices), -1 where it never showed one."""
    memory = torch.full_like(pixels[:, 0], -1)
    for step in range(pixels.shape[1]):
        ground = background.gather(1, pixels[:, step])
        memory = torch.where(ground, pixels[:, step], memory)
    return memory


def _periodic_fill(known: torch.Tensor, reach: int) -> torch.Tensor:
    """Each clip's colour indices (B, H, W), -1 unknown, with each unknown pixel given the colour of
    the nearest pixel d away along a row, a column or a diagonal (d up to `reach`) for a shift under
    which that clip's background is the same: every pixel known both at p and at p + d has one
    colour, and such pixels cover at least half the frame (a stripe's run, a checker's period, a
    gradient's row)."""
    b, h, w = known.shape
    wide = w + 2 * reach
    padded = F.pad(known, (reach, reach, reach, reach), value=-1).reshape(b, -1)
    shifts = torch.tensor(
        [(d * sy, d * sx) for d in range(1, reach + 1) for sy, sx in _DIRECTIONS], device=known.device
    )  # nearest first
    rows, cols = torch.arange(h, device=known.device), torch.arange(w, device=known.device)
    base = ((rows[:, None] + reach) * wide + cols[None, :] + reach).reshape(-1)  # (H W) in the padded frame
    windows = padded[:, (base[None, :] + shifts[:, :1] * wide + shifts[:, 1:]).reshape(-1)].view(b, len(shifts), h * w)
    here = known.reshape(b, 1, h * w)
    seen = here >= 0
    there = windows >= 0  # (B, shifts, H W): the pixel each shift away is known
    agree = ((windows == here) | ~there | ~seen).all(dim=2)
    ok = agree & ((there & seen).sum(dim=2) * 2 >= h * w)  # (B, shifts): shifts the background repeats under
    usable = ok[:, :, None] & there
    value = windows.gather(1, usable.to(torch.uint8).argmax(dim=1, keepdim=True))  # the nearest such shift's
    filled = torch.where(~seen & usable.any(dim=1, keepdim=True), value, here)
    return filled.view(b, h, w)


def filled_memory(memory: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`background_memory` (B, H W) with every pixel that never showed the background (an object
    stood on it through the whole context) given a colour. A background that repeats under a shift
    (a stripe down the frame, a checker's period, a gradient's row; `_periodic_fill`: shifts along
    rows, columns and diagonals, up to a quarter of the frame's side) gives the pixel the colour of
    a pixel that shift away, nearest shifts first; what is left takes the remembered colour of its
    nearest pixel above or below, else beside it, repeated outwards; -1 stays only in a clip that
    showed no background at all. A sprite that leaves such a pixel uncovers that colour: the
    network's own guess there, learned into the memory, was often the other stripe's and stayed,
    and a neighbour's colour is wrong at the edge of a checker's cell."""
    h, w = size
    filled = memory.view(-1, h, w).clone()
    if (filled < 0).any():
        filled = _periodic_fill(filled, max(1, min(h, w) // 4))
    for _ in range(h + w):
        if not (filled < 0).any():
            break
        for dim, shift in ((1, 1), (1, -1), (2, 1), (2, -1)):
            moved = filled.roll(shift, dims=dim)
            moved.select(dim, 0 if shift == 1 else -1).fill_(-1)  # roll wraps: the wrapped line knows nothing
            filled = torch.where((filled < 0) & (moved >= 0), moved, filled)
    return filled.view(-1, h * w)


def _pieces(masks: torch.Tensor) -> torch.Tensor:
    """(S,) bool: whether the set cells of each of `masks` (S, h, w) bool form one 8-connected piece.
    Every cell starts with its own label and takes the largest of its piece's neighbours' until no
    label changes: a mask is one piece when one label is left on it."""
    h, w = masks.shape[1:]
    cells = torch.arange(1, h * w + 1, dtype=torch.float32, device=masks.device).view(1, h, w)
    labels = torch.where(masks, cells, 0.0)[:, None]  # (S, 1, h, w)
    on = masks[:, None]
    for _ in range(h * w):
        grown = torch.where(on, F.max_pool2d(labels, 3, stride=1, padding=1), 0.0)
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels[:, 0]
    highest = labels.amax(dim=(1, 2))
    lowest = torch.where(masks, labels, math.inf).amin(dim=(1, 2))
    return masks.any(dim=(1, 2)) & (highest == lowest)


def find_sprites(pixels: torch.Tensor, background: torch.Tensor, usable: torch.Tensor, size: tuple[int, int]) -> Sprites:
    """`sampler.palette_sprites`: the objects of each clip's context frames, whose pixels' colours
    are `pixels` (B, T, H W) (`palettes`' table indices). A colour that is not `background` (B, K)
    and that its fullest context frame shows as one connected piece is a sprite of that piece's
    shape, placed where that shape lies in the last context frame (the top-left cell at which it
    covers most of that frame's pixels of its colour, wholly inside the frame); a colour absent
    from the last frame is no sprite. Sprites are ordered by clip, then colour."""
    h, w = size
    device = pixels.device
    b, t, _ = pixels.shape
    k = background.shape[1]
    counts = torch.zeros(b, t, k, dtype=torch.int64, device=device).scatter_add_(
        2, pixels, torch.ones_like(pixels)
    )  # (B, T, K): each colour's pixels in each context frame
    candidate = usable[:, None] & ~background & (counts[:, -1] > 0)
    clip, colour = candidate.nonzero(as_tuple=True)  # by clip, then colour
    fullest = counts.argmax(dim=1)[clip, colour]  # the context frame with most of it (the first such)
    shapes = (pixels[clip, fullest] == colour[:, None]).view(-1, h, w)  # (S0, h, w)
    last = (pixels[clip, -1] == colour[:, None]).view(-1, h, w)
    keep = _pieces(shapes)
    clip, colour, shapes, last = clip[keep], colour[keep], shapes[keep], last[keep]
    count = len(clip)
    owned = torch.zeros_like(background)
    owned[clip, colour] = True
    rows_in, cols_in = shapes.any(dim=2), shapes.any(dim=1)  # (S, h), (S, w)
    top, left = rows_in.to(torch.uint8).argmax(dim=1), cols_in.to(torch.uint8).argmax(dim=1)
    bottom = h - 1 - rows_in.flip(1).to(torch.uint8).argmax(dim=1)
    right = w - 1 - cols_in.flip(1).to(torch.uint8).argmax(dim=1)
    box = torch.stack([bottom - top + 1, right - left + 1], dim=1)  # (S, 2)
    which, row, col = shapes.nonzero(as_tuple=True)  # each shape's cells, row by row
    row, col = row - top[which], col - left[which]  # from its box's top-left corner
    area = shapes.sum(dim=(1, 2))
    most = int(area.max()) if count else 1
    slot = torch.arange(len(which), device=device) - (area.cumsum(0) - area)[which]
    rows = torch.zeros(count, most, dtype=torch.int64, device=device)
    cols, cells = torch.zeros_like(rows), torch.zeros(count, most, dtype=torch.bool, device=device)
    rows[which, slot], cols[which, slot], cells[which, slot] = row, col, True
    at = torch.zeros(count, 2, dtype=torch.int64, device=device)
    if count:  # where each shape covers most of its colour in the last frame: one grouped convolution
        kh, kw = int(box[:, 0].max()), int(box[:, 1].max())
        kernels = torch.zeros(count, 1, kh, kw, device=device)
        kernels[which, 0, row, col] = 1.0
        score = F.conv2d(F.pad(last.float()[None], (0, kw - 1, 0, kh - 1)), kernels, groups=count)[0]  # (S, h, w)
        inside = (torch.arange(h, device=device)[None, :, None] <= (h - box[:, 0])[:, None, None]) & (
            torch.arange(w, device=device)[None, None, :] <= (w - box[:, 1])[:, None, None]
        )
        flat = torch.where(inside, score, -1.0).view(count, -1).argmax(dim=1)
        at = torch.stack([flat // w, flat % w], dim=1)
    return Sprites(
        clip=clip,
        colour=colour,
        rows=rows,
        cols=cols,
        cells=cells,
        size=box,
        position=at.float(),
        alive=torch.ones(count, dtype=torch.bool, device=device),
        missed=torch.zeros(count, dtype=torch.int64, device=device),
        owned=owned,
        depth=torch.zeros(count, count, device=device),
    )


def draw_sprites(nearest: torch.Tensor, sprites: Sprites, memory: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each pixel's colour `nearest` (B, H W) with every sprite moved whole. A sprite moves as far as
    the network moved its colour: the centre of the cells drawn in its colour within `SPRITE_REACH`
    of a frame's side of its box, less the centre of its shape where it was drawn last. The move is
    added to its position to a fraction of a cell, and the sprite is drawn at that position
    rounded, so that a world moving less than half a cell a frame still moves (a sprite drawn at
    the whole cell nearest the network's own drawing would stand still). A sprite with none of its
    colour within reach stays where it was, and is gone after `SPRITE_PATIENCE` such frames in a
    row, not counting frames in which its box touches that of a sprite that was drawn. Pixels
    drawn in a sprite's colour take their remembered background colour (`memory` (B, H W),
    `filled_memory`), then the sprites are drawn on top. Where sprites overlap, each pixel the
    network drew in one of their colours is a vote that that one is on top (`Sprites.depth`, summed
    over the rollout): the one with more votes against each other is drawn over it, the smaller
    where neither has more. `sprites`' places, `alive`, `missed` and `depth` are updated."""
    h, w = size
    b = nearest.shape[0]
    count = sprites.clip.shape[0]
    remembered = torch.where(memory >= 0, memory, nearest)
    frame = torch.where(sprites.owned.gather(1, nearest), remembered, nearest)  # sprite colours erased
    if count == 0:
        return frame
    reach = max(2, math.ceil(SPRITE_REACH * max(h, w)))
    device = nearest.device
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    at = sprites.at  # where each was drawn last
    low, high = at - reach, at + sprites.size - 1 + reach  # (S, 2): the box within reach
    near = ((rows[None, :] >= low[:, :1]) & (rows[None, :] <= high[:, :1]))[:, :, None] & (
        (cols[None, :] >= low[:, 1:]) & (cols[None, :] <= high[:, 1:])
    )[:, None, :]  # (S, h, w)
    drawn = (nearest[sprites.clip].view(count, h, w) == sprites.colour[:, None, None]) & near
    found = drawn.sum(dim=(1, 2))
    seen = found > 0
    # not drawn, but touching a sprite of its clip that is: hidden behind it (or it behind this one)
    top, bottom = at, at + sprites.size - 1
    touching = ((top[:, None] <= bottom[None]) & (bottom[:, None] >= top[None])).all(dim=-1)
    touching &= (sprites.clip[:, None] == sprites.clip[None]) & (sprites.alive & seen)[None]
    touching.fill_diagonal_(False)
    sprites.missed = torch.where(seen | touching.any(dim=1), 0, sprites.missed + 1)
    sprites.alive = sprites.alive & (sprites.missed < SPRITE_PATIENCE)
    found = found.clamp_min(1).float()
    centre = torch.stack([(drawn.sum(dim=2) * rows).sum(dim=1), (drawn.sum(dim=1) * cols).sum(dim=1)], dim=1) / found[:, None]
    area = sprites.cells.sum(dim=1)
    own = torch.stack([(sprites.rows * sprites.cells).sum(dim=1), (sprites.cols * sprites.cells).sum(dim=1)], dim=1)
    shown = at + own / area[:, None]  # the centre of its shape where it was drawn last
    limit = torch.tensor([h, w], device=device) - sprites.size
    moved = (sprites.position + centre - shown).clamp(min=torch.zeros_like(limit), max=limit)
    sprites.position = torch.where((sprites.alive & seen)[:, None], moved, sprites.position)  # missed: waits
    at = sprites.at
    painted = sprites.cells & sprites.alive[:, None]  # (S, N)
    pixel = sprites.clip[:, None] * h * w + (at[:, :1] + sprites.rows) * w + at[:, 1:] + sprites.cols
    out = frame.flatten().clone()
    drawn_at = pixel[painted]
    if int(torch.bincount(drawn_at, minlength=1).max()) <= 1:  # no two sprites overlap: each drawn as it is
        out[drawn_at] = sprites.colour[:, None].expand_as(pixel)[painted]
        return out.view(b, h * w)
    # a clip's sprites are consecutive (`find_sprites`): each has a slot among its clip's, and a pixel
    # the sprites of its clip that cover it, (B H W, most sprites of a clip) bool
    index = torch.arange(count, device=device)
    first = torch.full((b,), count, dtype=torch.int64, device=device).scatter_reduce_(
        0, sprites.clip, index, "amin"
    )
    slot = index - first[sprites.clip]
    cover = torch.zeros(b * h * w, int(slot.max()) + 1, dtype=torch.bool, device=device)
    cover[drawn_at, slot[:, None].expand_as(pixel)[painted]] = True
    covered = cover.any(dim=1)
    slots = torch.arange(cover.shape[1], device=device)
    # (B H W, M): the sprite in each slot of each pixel's clip
    owner = (first.repeat_interleave(h * w)[:, None] + slots).clamp(max=count - 1)
    lone = cover[covered].float().argmax(dim=1)  # a pixel one sprite covers
    out[covered] = sprites.colour[owner[covered].gather(1, lone[:, None])[:, 0]]
    shared = cover.sum(dim=1) >= 2
    if shared.any():  # which is on top: what the network drew where they overlap, so far in the rollout
        on, who = cover[shared], owner[shared]  # (P, M): the pixels two or more sprites cover
        drew = on & (nearest.flatten()[shared][:, None] == sprites.colour[who])
        pairs = drew[:, :, None] & on[:, None, :]  # (P, M, M): both cover it, the network drew the first
        sprites.depth.index_put_(
            (who[:, :, None].expand_as(pairs)[pairs], who[:, None, :].expand_as(pairs)[pairs]),
            torch.ones(int(pairs.sum()), device=device),
            accumulate=True,
        )
        rank = area * count + index  # no overlap drawn either way yet: the smallest on top
        beats = (sprites.depth > sprites.depth.T) | (
            (sprites.depth == sprites.depth.T) & (rank[:, None] < rank[None, :])
        )  # (S, S): i is drawn over j
        over = beats[who[:, :, None], who[:, None, :]] & on[:, None, :]  # (P, M, M)
        score = torch.where(on, over.sum(dim=2) * (int(rank.max()) + 1) - rank[who], -1)  # most others under it
        out[shared] = sprites.colour[who.gather(1, score.argmax(dim=1, keepdim=True))[:, 0]]
    return out.view(b, h * w)


def frames_palette(
    frames: torch.Tensor, limit: int, counts: float = 0.0, background: float = 0.0, sprites: bool = False
) -> Palette:
    """What a rollout after the context `frames` (B, T, C, H, W) in [-1, 1] redraws its frames with
    (`snap`'s arguments after the frames): their colours (`palettes`, at most `limit` a clip); with
    `counts` (`sampler.palette_counts`) each colour's cap, that factor of the most pixels one frame
    gives it; with `background` (`sampler.palette_background`), which colours are background
    (`background_colours`; not capped: an object moving off the background uncovers more of it)
    and each pixel's background colour (`background_memory`, updated as the rollout goes); and with
    `sprites` too, the objects (`find_sprites`, moved as the rollout goes) over a memory in which
    every pixel has a background colour (`filled_memory`)."""
    table, usable, amounts, pixels = palettes(frames, limit)
    size = tuple(frames.shape[-2:])
    caps = torch.ceil(amounts * counts).to(torch.int64) if counts else None
    ground = memory = found = None
    if background:
        ground = background_colours(pixels, amounts, background, size)
        if caps is not None:
            caps = torch.where(ground, pixels.shape[-1], caps)
        memory = background_memory(pixels, ground)
        if sprites:
            memory = filled_memory(memory, size)
            found = find_sprites(pixels, ground, usable, size)
    return Palette(table, usable, caps, ground, memory, found)
