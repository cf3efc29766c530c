"""Flow matching with diffusion forcing: the training objective of the world DiT.

Rectified flow: `x_t = (1 - t) x_0 + t eps` with t = 0 clean and t = 1 pure noise; the network is
trained to give the velocity `v = eps - x_0`, so that integrating dx/dt = v from t = 1 to 0
turns noise into a frame. Diffusion forcing: every frame of a clip gets its own noise level, so one
model learns both to denoise the newest frame and to condition on clean or slightly noised earlier
frames (block-causal attention keeps later frames out of the way).

Rollout training (self forcing, `rollout_frames` = R > 0): teacher forcing conditions every frame
on ground truth, a rollout on the model's own frames, whose errors then compound. With R > 0 the
model generates R frames itself after a clip's ground-truth frames (the KV-cached sampler of
`streaming.LatentStream`, without gradient), and the loss is on the clip's last frame alone,
predicted from that cache as the rollout's next step predicts it: the generated frames are its
context (committed at the sampler's `context_noise`) and its anchors, the real frame its target.
Only that frame's forward pass carries gradient, so memory does not grow with R. (`rollout_prob`
is the teacher-forced variant: every frame at once, after a context rolled out as a whole.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from worldforge.models.config import ModelConfigError, ObjectiveConfig
from worldforge.models.flow import next_anchor, to_velocity, to_x0
from worldforge.models.streaming import LatentStream, generate_latents
from worldforge.models.world_model import WorldModel


def sample_noise_levels(
    batch: int, frames: int, config: ObjectiveConfig, device, generator=None
) -> torch.Tensor:
    """(B, T) noise levels in (0, 1): logit-normal or uniform, per frame (or one per clip); with
    `detail_prob` > 0 a mixture, that share of levels drawn from the detail logit-normal."""
    shape = (batch, frames if config.per_frame_noise else 1)
    if config.noise_schedule == "logit_normal":
        normal = torch.randn(shape, device=device, generator=generator)
        levels = torch.sigmoid(config.logit_mean + config.logit_std * normal)
    else:
        levels = torch.rand(shape, device=device, generator=generator)
    if config.detail_prob > 0:
        normal = torch.randn(shape, device=device, generator=generator)
        detail = torch.sigmoid(config.detail_logit_mean + config.detail_logit_std * normal)
        chosen = torch.rand(shape, device=device, generator=generator) < config.detail_prob
        levels = torch.where(chosen, detail, levels)
    return levels.expand(batch, frames).contiguous()


@dataclass
class NoisedClips:
    """A batch of latent clips noised for training; all (B, T', ...) with T' latent frames."""

    clean: torch.Tensor  # (B, T', c, h, w)
    noise: torch.Tensor  # (B, T', c, h, w)
    noisy: torch.Tensor  # (B, T', c, h, w): (1 - t) clean + t noise
    levels: torch.Tensor  # (B, T'): t per frame, 0 for clean context
    weight: torch.Tensor  # (B, T'): which frames carry loss (0 or 1)

    @property
    def target(self) -> torch.Tensor:
        """The velocity the network should give: eps - x0."""
        return self.noise - self.clean


def noise_clips(clean: torch.Tensor, config: ObjectiveConfig, generator=None) -> NoisedClips:
    """Diffusion forcing noise for latent clips (B, T', c, h, w), shared by pretraining and every
    objective built on it (distillation, pruning recovery): per-frame noise levels, and with
    `clean_context_prob` a clean context before a random split, as in a rollout."""
    b, t = clean.shape[:2]
    device = clean.device
    levels = sample_noise_levels(b, t, config, device, generator)  # (B, T')
    weight = torch.ones_like(levels)
    if config.residual and t > 1:
        # The first frame has no previous frame to change from, and a rollout never generates it
        # (there is always context): it is context only.
        weight[:, 0] = 0.0
    if config.clean_context_prob > 0 and t > 1:
        # As in a rollout: frames before a random split are clean context, not trained on.
        split = torch.randint(1, t, (b, 1), device=device, generator=generator)
        chosen = torch.rand(b, 1, device=device, generator=generator) < config.clean_context_prob
        index = torch.arange(t, device=device)[None, :]
        context = chosen & (index < split)  # (B, T')
        levels = levels.masked_fill(context, 0.0)
        weight = weight.masked_fill(context, 0.0)
        if config.context_targets is not None:
            # Only the first frames after the context are trained: the ones that see it clean.
            weight = weight.masked_fill(chosen & (index >= split + config.context_targets), 0.0)
    noise = torch.randn(clean.shape, device=device, generator=generator, dtype=clean.dtype)
    expand = levels[:, :, None, None, None].to(clean.dtype)
    noisy = (1 - expand) * clean + expand * noise
    return NoisedClips(clean=clean, noise=noise, noisy=noisy, levels=levels, weight=weight)


def weighted_frame_mse(error: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """error (B, T', ...), weight (B, T') -> (scalar weighted mean of per-frame MSE, per-frame MSE (B, T'))."""
    per_frame = error.float().pow(2).flatten(2).mean(dim=2)
    return (per_frame * weight).sum() / weight.sum().clamp_min(1e-8), per_frame


def blur_frames(frames: torch.Tensor, config: ObjectiveConfig, generator=None) -> torch.Tensor:
    """`anchor_blur`: frames (B, T, c, h, w), each blurred with chance `anchor_blur_prob` by a Gaussian
    of its own width, uniform in 0 .. `anchor_blur` cells (taps out to three times the widest, border
    cells repeated)."""
    b, t, _, h, w = frames.shape
    width = torch.rand(b, t, device=frames.device, generator=generator) * config.anchor_blur
    chosen = torch.rand(b, t, device=frames.device, generator=generator) < config.anchor_blur_prob
    width = torch.where(chosen, width, torch.zeros_like(width)).clamp_min(1e-3).flatten()
    reach = max(math.ceil(3 * config.anchor_blur), 1)
    offsets = torch.arange(-reach, reach + 1, device=frames.device, dtype=frames.dtype)
    taps = torch.exp(-(offsets[None, :] ** 2) / (2 * width[:, None].to(frames.dtype) ** 2))
    taps = (taps / taps.sum(dim=1, keepdim=True))[:, :, None, None, None]  # (B T, taps, 1, 1, 1)
    padded = F.pad(frames.flatten(0, 1), (reach,) * 4, mode="replicate")
    across = sum(taps[:, k] * padded[..., k : k + w] for k in range(2 * reach + 1))
    down = sum(taps[:, k] * across[..., k : k + h, :] for k in range(2 * reach + 1))
    return down.unflatten(0, (b, t))


def trail_frames(frames: torch.Tensor, config: ObjectiveConfig, generator=None) -> torch.Tensor:
    """`anchor_trail`: frames (B, T, c, h, w), a share `anchor_trail` of them with each cell taken from
    the frame or the one before it (the first: itself), whichever is brighter (channel mean)."""
    b, t = frames.shape[:2]
    before = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    brighter = before.mean(dim=2, keepdim=True) > frames.mean(dim=2, keepdim=True)
    chosen = (torch.rand(b, t, device=frames.device, generator=generator) < config.anchor_trail)[:, :, None, None, None]
    return torch.where(brighter & chosen, before, frames)


def grain_frames(frames: torch.Tensor, config: ObjectiveConfig, generator=None) -> torch.Tensor:
    """`anchor_noise`: frames (B, T, c, h, w), each with Gaussian noise of its own standard deviation,
    uniform in 0 .. `anchor_noise`."""
    b, t = frames.shape[:2]
    std = torch.rand(b, t, 1, 1, 1, device=frames.device, generator=generator) * config.anchor_noise
    noise = torch.randn(frames.shape, device=frames.device, generator=generator, dtype=frames.dtype)
    return frames + std.to(frames.dtype) * noise


def noise_targets(clean: torch.Tensor, config: ObjectiveConfig, generator=None) -> NoisedClips:
    """`training_context=clean` and self forcing: every frame a target at its own noise level (the
    context is a separate clean copy, see `WorldDiT.forward_teacher_forced`, or a rollout's KV cache,
    see `self_forced_step`); with `residual` the first frame, which has no previous frame to change
    from, carries no loss."""
    b, t = clean.shape[:2]
    levels = sample_noise_levels(b, t, config, clean.device, generator)  # (B, T')
    weight = torch.ones_like(levels)
    if config.residual and t > 1:
        weight[:, 0] = 0.0
    noise = torch.randn(clean.shape, device=clean.device, generator=generator, dtype=clean.dtype)
    expand = levels[:, :, None, None, None].to(clean.dtype)
    return NoisedClips(
        clean=clean, noise=noise, noisy=(1 - expand) * clean + expand * noise, levels=levels, weight=weight
    )


def rollout_context(
    model: WorldModel, clean: torch.Tensor, condition: torch.Tensor, split: int, steps: int, generator=None
) -> torch.Tensor:
    """The context a rollout from frame `split` commits: ground truth before it, then the model's
    own frames, generated without gradient by the KV-cached sampler (`steps` Euler steps).

    clean: (B, T', c, h, w) -> (B, T', c, h, w); the last frame stays ground truth (no frame of the
    clip attends to it as context)."""
    t = clean.shape[1]
    if not 1 <= split < t - 1:
        return clean
    generated, _ = generate_latents(
        model, clean[:, :split], condition[:, : t - 1], t - 1 - split, steps, "euler", True, generator
    )
    return torch.cat([clean[:, :split], generated.to(clean.dtype), clean[:, t - 1 :]], dim=1)


@dataclass
class TrainingInputs:
    """What the DiT is trained on for a batch of latent clips, whichever `training_context`."""

    batch: NoisedClips  # the frames to denoise (targets, noise levels, loss weights)
    condition: torch.Tensor  # (B, T', r[, A + 1]) action conditioning
    context: torch.Tensor | None  # (B, T', c, h, w) clean context copies (training_context=clean), else None
    anchor: torch.Tensor  # (B, T', k c, h, w) each frame's previous clean frames
    rolled: bool  # the context after a split is the model's own rollout


def training_inputs(
    model: WorldModel, clean: torch.Tensor, condition: torch.Tensor, config: ObjectiveConfig, generator=None
) -> TrainingInputs:
    """Noise a batch of clean latent clips (B, T', c, h, w) as `config` says: diffusion forcing (with
    `anchor_trail`, `anchor_blur` and `anchor_noise`, on trailed, blurred and grained anchors), or
    clean context copies (with `rollout_prob`, the model's own rollout after a random split)."""
    if config.training_context == "diffusion_forcing":
        batch = noise_clips(clean, config, generator)
        anchors = trail_frames(clean, config, generator) if config.anchor_trail else clean
        if config.anchor_blur:
            anchors = blur_frames(anchors, config, generator)
        if config.anchor_noise:
            anchors = grain_frames(anchors, config, generator)
        return TrainingInputs(batch, condition, None, model.anchors(anchors), False)
    batch = noise_targets(clean, config, generator)
    context, t = clean, clean.shape[1]
    rolled = t > 2 and float(torch.rand((), generator=generator, device=clean.device)) < config.rollout_prob
    if rolled:  # ground truth up to a random split, the model's own frames after it
        split = int(torch.randint(1, t - 1, (), generator=generator, device=clean.device))
        context = rollout_context(model, clean, condition, split, config.rollout_steps, generator)
    return TrainingInputs(batch, condition, context, model.anchors(context), rolled)


def network_output(model: WorldModel, inputs: TrainingInputs) -> torch.Tensor:
    """The DiT's output (velocity or x0) for the frames to denoise, (B, T', c, h, w)."""
    batch = inputs.batch
    if inputs.context is not None:
        return model.dit.forward_teacher_forced(batch.noisy, batch.levels, inputs.condition, inputs.context)
    return model.dit(batch.noisy, batch.levels, inputs.condition, anchor=inputs.anchor)


def self_forced_step(
    model: WorldModel, clean: torch.Tensor, condition: torch.Tensor, config: ObjectiveConfig, generator=None
) -> tuple[NoisedClips, torch.Tensor, torch.Tensor]:
    """Self forcing: the last frame of clean latent clips (B, T', c, h, w) predicted as a rollout
    predicts it after `config.rollout_frames` (R) frames of its own.

    A `LatentStream` takes the first T' - R - 1 frames as ground-truth context and generates the
    next R without gradient (`rollout_steps` steps of the sampler's solver), committing them at the
    sampler's context_noise; the last frame, noised, is then predicted from that KV cache, its anchor
    the last generated frame(s). Returns that frame noised (B, 1, ...), its anchor, and the DiT's
    output for it: the only computation with gradient."""
    t, frames = clean.shape[1], config.rollout_frames
    known = t - frames - 1  # ground-truth context frames
    if known < 1:
        raise ModelConfigError(
            f"objective.rollout_frames={frames} needs clips of at least {frames + 2} latent frames (context, "
            f"{frames} generated, 1 trained), got {t}: set data.clip_frames to at least "
            f"{1 + (frames + 1) * model.frames_per_latent} or lower objective.rollout_frames"
        )
    with torch.no_grad():
        stream = LatentStream(model, clean[:, :known], condition[:, :known], generator)
        for index in range(known, t - 1):
            stream.next(condition[:, index : index + 1], config.rollout_steps)
        stream.commit()  # the last generated frame joins the context, as the rollout's next step commits it
    anchor = next_anchor(torch.stack(stream.clean, dim=1), model.model_cfg.anchor_frames)
    batch = noise_targets(clean[:, t - 1 :], config, generator)
    output = model.dit(batch.noisy, batch.levels, condition[:, t - 1 :], cache=stream.cache, anchor=anchor)
    return batch, anchor, output


def unrolled_losses(
    model: WorldModel,
    clean: torch.Tensor,
    condition: torch.Tensor,
    predicted: torch.Tensor,
    config: ObjectiveConfig,
    generator=None,
) -> list[torch.Tensor]:
    """Rollout training with gradient (`config.unroll` passes): the clips (B, T', c, h, w) again, every
    frame after a random split drawn from pure noise (level 1, a one-step rollout's input) and
    anchored on the previous pass's prediction `predicted` (B, T', c, h, w) of the frames before it,
    ground truth before the split. Returns each pass's loss (x0 MSE on the frames after the split);
    the gradient reaches the earlier passes through the anchors."""
    b, t = clean.shape[:2]
    if t < 3:
        return []
    split = int(torch.randint(1, t - 1, (), generator=generator, device=clean.device))
    generated = (torch.arange(t, device=clean.device) >= split)[None, :]  # (1, T')
    levels = generated.to(clean.dtype).expand(b, t)
    noise = torch.randn(clean.shape, device=clean.device, generator=generator, dtype=clean.dtype)
    mask = generated[:, :, None, None, None]
    noisy = torch.where(mask, noise, clean)
    losses = []
    for _ in range(config.unroll):
        anchor = model.anchors(torch.where(mask, predicted.to(clean.dtype), clean))
        output = model.dit(noisy, levels, condition, anchor=anchor)
        predicted = to_x0(output, noisy, levels, config, anchor=anchor)
        losses.append(weighted_frame_mse(predicted.float() - clean.float(), levels)[0])
    return losses


def drop_actions(model: WorldModel, condition: torch.Tensor, share: float, generator=None) -> torch.Tensor:
    """`condition` (B, T', r[, A + 1]) with each frame's action replaced by "no action" with
    probability `share` (`objective.action_dropout`)."""
    b, t = condition.shape[:2]
    dropped = torch.rand((b, t), generator=generator, device=condition.device) < share
    dropped = dropped.view(b, t, *([1] * (condition.ndim - 2)))
    return torch.where(dropped, model.no_action(condition), condition)


def flow_matching_loss(
    model: WorldModel,
    frames: torch.Tensor,
    actions: torch.Tensor,
    config: ObjectiveConfig | None = None,
    generator=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The flow-matching loss of a batch of clips (on velocity or on x0, `config.loss`).

    frames: (B, T, C, H, W) in [-1, 1]; actions: (B, T) int64 or (B, T, A) float, action t taken
    after frame t (the last one is unused). The tokenizer is frozen here (encoded without grad).
    config defaults to the model's own objective config; with `rollout_frames` only the clip's
    last frame is trained, after the model's own rollout (`self_forced_step`); with `unroll` the
    loss is the mean of this pass's and the unrolled passes' (`unrolled_losses`).
    Returns the scalar loss and detached logs: loss, loss_per_frame (T',), noise_level (mean),
    rollout (1 when the context was the model's own rollout), and with `unroll` unroll_loss (the
    last unrolled pass's)."""
    config = config or model.objective_cfg
    with torch.no_grad():
        clean = model.tokenizer.encode(frames)  # (B, T', c, h, w)
    condition = model.action_condition(actions, clean.shape[1])
    if config.action_dropout:
        condition = drop_actions(model, condition, config.action_dropout, generator)
    if config.rollout_frames:
        batch, anchor, output = self_forced_step(model, clean, condition, config, generator)
        rolled = True
    else:
        inputs = training_inputs(model, clean, condition, config, generator)
        batch, anchor, rolled = inputs.batch, inputs.anchor, inputs.rolled
        output = network_output(model, inputs)
    x0 = None
    if config.loss == "x0" or config.unroll:
        x0 = to_x0(output, batch.noisy, batch.levels, config, anchor=anchor)
    if config.loss == "x0":
        error = x0.float() - batch.clean.float()
    else:
        velocity = to_velocity(output, batch.noisy, batch.levels, config, anchor=anchor)
        error = velocity.float() - batch.target.float()
    loss, per_frame = weighted_frame_mse(error, batch.weight)
    unrolled = []
    if config.unroll:
        unrolled = unrolled_losses(model, clean, condition, x0, config, generator)
        loss = (loss + sum(unrolled)) / (1 + len(unrolled))
    weight = batch.weight
    frame_loss = (per_frame * weight).sum(0) / weight.sum(0).clamp_min(1)  # (T',), self forcing (1,)
    logs = {
        "loss": loss.detach(),
        "loss_per_frame": F.pad(frame_loss, (clean.shape[1] - frame_loss.shape[0], 0)).detach(),
        "noise_level": batch.levels.mean().detach(),
        "rollout": torch.tensor(float(rolled)),
    }
    if unrolled:
        logs["unroll_loss"] = unrolled[-1].detach()
    return loss, logs
