"""Flow matching with diffusion forcing: the training objective of the world DiT.

Rectified flow: `x_t = (1 - t) x_0 + t eps` with t = 0 clean and t = 1 pure noise; the network is
trained to give the velocity `v = eps - x_0`, so that integrating dx/dt = v from t = 1 to 0
turns noise into a frame. Diffusion forcing: every frame of a clip gets its own noise level, so one
model learns both to denoise the newest frame and to condition on clean or slightly noised earlier
frames (block-causal attention keeps later frames out of the way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from worldforge.models.config import ObjectiveConfig

if TYPE_CHECKING:
    from worldforge.models.world_model import WorldModel


def sample_noise_levels(
    batch: int, frames: int, config: ObjectiveConfig, device, generator=None
) -> torch.Tensor:
    """(B, T) noise levels in (0, 1): logit-normal or uniform, per frame (or one per clip)."""
    shape = (batch, frames if config.per_frame_noise else 1)
    if config.noise_schedule == "logit_normal":
        normal = torch.randn(shape, device=device, generator=generator)
        levels = torch.sigmoid(config.logit_mean + config.logit_std * normal)
    else:
        levels = torch.rand(shape, device=device, generator=generator)
    return levels.expand(batch, frames).contiguous()


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
    (B, T, C, h, w) holds each frame's previous clean latent frame (zeros for the first)."""
    if config.prediction == "velocity":
        return output
    x0 = output + anchor if config.residual and anchor is not None else output
    t = levels.to(output.dtype).clamp_min(config.x0_min_level)[:, :, None, None, None]
    return (noisy - x0) / t


def previous_frames(latents: torch.Tensor) -> torch.Tensor:
    """(B, T, c, h, w) -> the frame before each one, zeros before the first: the residual anchor."""
    return torch.cat([torch.zeros_like(latents[:, :1]), latents[:, :-1]], dim=1)


def flow_matching_loss(
    model: WorldModel,
    frames: torch.Tensor,
    actions: torch.Tensor,
    config: ObjectiveConfig | None = None,
    generator=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The velocity loss of a batch of clips.

    frames: (B, T, C, H, W) in [-1, 1]; actions: (B, T) int64 or (B, T, A) float, action t taken
    after frame t (the last one is unused). The tokenizer is frozen here (encoded without grad).
    config defaults to the model's own objective config.
    Returns the scalar loss and detached logs: loss, loss_per_frame (T',), noise_level (mean)."""
    config = config or model.objective_cfg
    with torch.no_grad():
        clean = model.tokenizer.encode(frames)  # (B, T', c, h, w)
    b, t = clean.shape[:2]
    condition = model.action_condition(actions, t)
    levels = sample_noise_levels(b, t, config, clean.device, generator)  # (B, T')
    weight = torch.ones_like(levels)
    if config.residual and t > 1:
        # The first frame has no previous frame to change from, and a rollout never generates it
        # (there is always context): it is context only.
        weight[:, 0] = 0.0
    if config.clean_context_prob > 0 and t > 1:
        # As in a rollout: frames before a random split are clean context, not trained on.
        split = torch.randint(1, t, (b, 1), device=clean.device, generator=generator)
        chosen = torch.rand(b, 1, device=clean.device, generator=generator) < config.clean_context_prob
        context = chosen & (torch.arange(t, device=clean.device)[None, :] < split)  # (B, T')
        levels = levels.masked_fill(context, 0.0)
        weight = weight.masked_fill(context, 0.0)
    noise = torch.randn(clean.shape, device=clean.device, generator=generator, dtype=clean.dtype)
    expand = levels[:, :, None, None, None].to(clean.dtype)
    noisy = (1 - expand) * clean + expand * noise
    output = model.dit(noisy, levels, condition)
    velocity = to_velocity(output, noisy, levels, config, anchor=previous_frames(clean))
    per_frame = (velocity.float() - (noise - clean).float()).pow(2).flatten(2).mean(dim=2)  # (B, T')
    loss = (per_frame * weight).sum() / weight.sum()
    logs = {
        "loss": loss.detach(),
        "loss_per_frame": ((per_frame * weight).sum(0) / weight.sum(0).clamp_min(1)).detach(),
        "noise_level": levels.mean().detach(),
    }
    return loss, logs
