"""Rectified-flow conversions that the model, its objective and every sampler share.

`x_t = (1 - t) x_0 + t eps`, velocity `v = eps - x_0`; the network outputs either v or x0 (with
`residual`, x0 as a change from each frame's anchor: its previous frame(s), stacked on channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldforge.models.config import ObjectiveConfig


def to_velocity(
    output: torch.Tensor,
    noisy: torch.Tensor,
    levels: torch.Tensor,
    config: ObjectiveConfig,
    anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """The velocity implied by the network output. output, noisy: (B, T, C, h, w); levels: (B, T).

    With x0 prediction v = (x_t - x0) / t, with t floored at `x0_min_level` so that the loss
    weight stays bounded near clean frames. With `residual`, x0 = anchor + output, where anchor
    (B, T, C, h, w) holds each frame's previous clean latent frame (zeros for the first); with
    `model.warp` the output's last 2 channels move that frame first (`warp`)."""
    if config.prediction == "velocity":
        return output
    x0 = to_x0(output, noisy, levels, config, anchor=anchor)
    t = levels.to(output.dtype).clamp_min(config.x0_min_level)[:, :, None, None, None]
    return (noisy - x0) / t


def to_x0(
    output: torch.Tensor,
    noisy: torch.Tensor,
    levels: torch.Tensor,
    config: ObjectiveConfig,
    anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """The clean frame implied by the network output (shapes as `to_velocity`): x0 = x_t - t v; with
    `residual`, the previous frame (moved by model.warp) plus the change, through the skip of
    `objective.skip_sigma` when set (`skip_weights`)."""
    if config.prediction == "x0":
        if not (config.residual and anchor is not None):
            return output
        channels = noisy.shape[2]
        previous = anchor[:, :, :channels]
        if output.shape[2] > channels:  # model.warp: the previous frame moved by the motion first
            previous = warp(previous, output[:, :, channels : channels + 2], config.warp_interpolation)
        change = output[:, :, :channels]
        if config.skip_sigma is None:
            return change + previous
        t = levels.to(output.dtype)[:, :, None, None, None]
        keep, scale = skip_weights(t, config.skip_sigma)
        return previous + keep * (noisy - (1 - t) * previous) + scale * change
    return noisy - levels.to(output.dtype)[:, :, None, None, None] * output


def hold_small(output: torch.Tensor, channels: int, motion: float, change: float) -> torch.Tensor:
    """`sampler.hold_motion` / `hold_change`: the residual network's output (B, T, channels [+ 2], h, w)
    with motions shorter than `motion` cells and changes whose largest channel is below `change` set
    to zero, so that what the network barely touches is kept exactly."""
    held = output.clone()
    if change > 0:
        delta = output[:, :, :channels]
        small = delta.abs().amax(dim=2, keepdim=True) < change
        held[:, :, :channels] = delta.masked_fill(small, 0.0)
    if motion > 0 and output.shape[2] > channels:
        field = output[:, :, channels : channels + 2]
        short = field.norm(dim=2, keepdim=True) < motion
        held[:, :, channels : channels + 2] = field.masked_fill(short, 0.0)
    return held


def skip_weights(levels: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`objective.skip_sigma`'s weights at noise levels t (any shape): (c_skip, c_out).

    The change r = x0 - base has standard deviation `sigma`; `x_t - (1 - t) base = (1 - t) r + t eps`
    is r noised, and c_skip is the least-squares linear estimate of r from it, (1 - t) s^2 /
    ((1 - t)^2 s^2 + t^2), the EDM skip in rectified-flow form. c_out is that estimate's error
    over the plain residual's, t / sqrt((1 - t)^2 s^2 + t^2): 1 at pure noise, where the skip
    carries nothing, falling to 0 at a clean frame, which passes through unchanged."""
    spread = ((1 - levels) * sigma) ** 2 + levels**2
    return (1 - levels) * sigma**2 / spread, levels / spread.sqrt()


def warp(frames: torch.Tensor, motion: torch.Tensor, interpolation: str = "bilinear") -> torch.Tensor:
    """Frames (B, T, c, h, w) moved by a motion field (B, T, 2, h, w): at each cell p, the frame's
    content from p - motion(p) (motion in cells, x then y: where that content went), resampled
    `interpolation`: bilinear, bicubic, or bicubic_clamped (bicubic held within the four nearest
    cells' range: its edges without its overshoot, which a rollout would amplify frame after
    frame), the border repeated outside. Zero motion returns the frames exactly."""
    b, t, _, h, w = frames.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=frames.device, dtype=frames.dtype),
        torch.arange(w, device=frames.device, dtype=frames.dtype),
        indexing="ij",
    )
    motion = motion.to(frames.dtype).flatten(0, 1)  # (B T, 2, h, w)
    source_x, source_y = xs - motion[:, 0], ys - motion[:, 1]  # where each cell's content comes from
    flat = frames.flatten(0, 1)

    def sample(x: torch.Tensor, y: torch.Tensor, mode: str) -> torch.Tensor:
        # grid_sample's coordinates: -1 .. 1 over the pixels' edges
        grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)  # (B T, h, w, 2)
        return F.grid_sample(flat, grid, mode=mode, padding_mode="border", align_corners=False)

    if interpolation != "bicubic_clamped":
        return sample(source_x, source_y, interpolation).unflatten(0, (b, t))
    moved = sample(source_x, source_y, "bicubic")
    # The four cells around each sample point: floor and floor + 1 in x and y.
    left, top = torch.floor(source_x), torch.floor(source_y)
    corners = torch.stack([sample(left + dx, top + dy, "nearest") for dx in (0, 1) for dy in (0, 1)])
    moved = torch.minimum(torch.maximum(moved, corners.amin(0)), corners.amax(0))
    return moved.unflatten(0, (b, t))


def previous_frames(latents: torch.Tensor, count: int = 1) -> torch.Tensor:
    """Each frame's anchor: the `count` frames before it, newest first, stacked on channels (zeros
    before the first frame). (B, T, c, h, w) -> (B, T, count c, h, w); channels :c are the frame
    just before, the one the residual objective changes from."""
    t = latents.shape[1]
    shifted = [
        torch.cat([torch.zeros_like(latents[:, : min(k, t)]), latents[:, : max(t - k, 0)]], dim=1)
        for k in range(1, count + 1)
    ]
    return torch.cat(shifted, dim=2)


def next_anchor(latents: torch.Tensor, count: int) -> torch.Tensor:
    """The anchor (B, 1, count c, h, w) of the frame that follows the clean frames `latents`."""
    recent = latents[:, -count:]
    return previous_frames(torch.cat([recent, recent[:, -1:]], dim=1), count)[:, -1:]
