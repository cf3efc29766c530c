"""Autoregressive rollout: context frames + actions -> the frames that follow, one at a time.

Each new latent frame starts as noise and is integrated to a clean frame by the sampler
(`SamplerConfig`: solver, steps, shift); it then joins the context. With `use_cache=True` the
keys/values of context frames live in a KV cache of at most `context_window - 1` frames (older
frames drop out), so a step costs one frame's tokens and memory stays bounded however long the
rollout; a frame joins the cache in the same DiT call as the next frame's first solver step (its
keys and values as a call of its own would make them), so a 1-step model makes one call per frame.
With `use_cache=False` every velocity evaluation recomputes the context from scratch:
the frames within the model's receptive field, `depth * (context_window - 1)` frames back, which
gives the same result as the cache up to float rounding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from worldforge.models.config import ModelConfigError
from worldforge.models.flow import next_anchor
from worldforge.models.palette import Palette, frames_palette, snap
from worldforge.models.sampler import VelocityFn, sample
from worldforge.models.world_model import WorldModel


@dataclass
class RolloutResult:
    frames: torch.Tensor  # (B, horizon, C, H, W) in [-1, 1]
    latents: torch.Tensor  # (B, horizon / r, c, h, w): the generated latent frames
    denoise_seconds: float  # the DiT: context prefill, every solver step, committing frames
    total_seconds: float  # end to end: encode context + denoise + decode
    peak_cache_frames: int  # most frames the KV cache held (0 without a cache)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _noised(latents: torch.Tensor, level: float, generator) -> torch.Tensor:
    if level == 0:
        return latents
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    return (1 - level) * latents + level * noise


def cached_velocity(
    model: WorldModel,
    cache,
    condition: torch.Tensor,
    previous: torch.Tensor,
    pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None,
) -> VelocityFn:
    """The velocity field of the next frame, attending to the context held in `cache`;
    previous (B, 1, c, h, w): the last clean latent frame (the `residual` objective's anchor).
    pending: (frame as the cache should hold it, its condition, its anchor, its noise level), a
    generated frame not yet in the cache: the first evaluation commits it in the same DiT call
    (one call fewer per frame, the same keys and values as a call of its own)."""

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        nonlocal pending
        levels = x.new_full((x.shape[0], 1), t)
        if pending is None:
            return model.guided_velocity(x, levels, condition, cache, anchor=previous)
        frame, frame_condition, frame_anchor, level = pending
        pending = None
        return model.guided_velocity(
            torch.cat([frame, x], dim=1),
            torch.cat([levels.new_full(frame.shape[:2], level), levels], dim=1),
            torch.cat([frame_condition, condition], dim=1),
            cache,
            anchor=torch.cat([frame_anchor, previous], dim=1),
            commit=frame.shape[1],
        )

    return velocity


def recomputed_velocity(
    model: WorldModel,
    past: torch.Tensor,
    past_anchor: torch.Tensor,
    level: float,
    condition: torch.Tensor,
    first: int,
    previous: torch.Tensor,
) -> VelocityFn:
    """The velocity field of the next frame, recomputing its context `past` (B, Tp, c, h, w), frames
    first .. first + Tp - 1 at noise level `level`, from scratch; past_anchor: each past frame's
    previous clean frame; condition covers past + the frame."""
    past_levels = past.new_full(past.shape[:2], level)
    anchor = torch.cat([past_anchor, previous], dim=1)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        levels = torch.cat([past_levels, x.new_full((x.shape[0], 1), t)], dim=1)
        latents = torch.cat([past, x], dim=1)
        return model.guided_velocity(latents, levels, condition, first_frame=first, anchor=anchor)[:, -1:]

    return velocity


def context_palette(model: WorldModel, context: torch.Tensor) -> Palette | None:
    """`sampler.palette`: what a rollout from the clean latent `context` (B, Tc', c, h, w) redraws its
    frames with (`palette.frames_palette`, on the context decoded to frames, under the sampler's
    `palette_max`, `palette_counts`, `palette_background` and `palette_sprites`); None when the
    palette is off."""
    config = model.sampler_cfg
    if not config.palette:
        return None
    return frames_palette(
        model.tokenizer.decode(context),
        config.palette_max,
        config.palette_counts,
        config.palette_background,
        config.palette_sprites,
    )


def in_palette(model: WorldModel, latent: torch.Tensor, palette: Palette | None) -> torch.Tensor:
    """A generated latent frame (B, 1, c, h, w) redrawn in the context's colours (`context_palette`);
    as it was when the palette is off. The patch tokenizer's latents are its frames rearranged, so
    decoding and encoding them is exact."""
    if palette is None:
        return latent
    return model.tokenizer.encode(snap(model.tokenizer.decode(latent), *palette))


class LatentStream:
    """A KV-cached rollout one latent frame at a time, for callers that learn each action only
    when its frame is due (an interactive session): `LatentStream(model, context, condition)` fills
    the cache with the clean latent `context` (B, Tc', c, h, w) under `condition` (B, Tc', r[, A + 1]);
    each `next(action)` (B, 1, r[, A + 1]) generates the following latent frame (B, 1, c, h, w).
    A generated frame joins the cache when the next one is asked for, so the last frame of a
    rollout costs no commit. Memory is bounded by the model's context window, however long it runs.
    """

    def __init__(self, model: WorldModel, context: torch.Tensor, condition: torch.Tensor, generator=None):
        self.model, self.generator = model, generator
        self.level = model.sampler_cfg.context_noise
        self.count = model.model_cfg.anchor_frames
        self.clean = list(context.unbind(1))[-self.count :]  # the last clean frames: the next anchor
        self.cache = model.dit.new_cache()
        b, known = context.shape[:2]
        model.velocity(
            _noised(context, self.level, generator),
            context.new_full((b, known), self.level),
            condition,
            self.cache,
            commit=known,
            anchor=model.anchors(context),
        )
        self.peak = self.cache.frames
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # frame, action, anchor
        self.palette = context_palette(model, context)

    def _take_pending(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """The generated frame waiting to join the cache, noised as the cache holds context, with its
        action, its anchor and that noise level (`cached_velocity`'s `pending`); none waits after."""
        frame, action, anchor = self.pending
        self.pending = None
        return _noised(frame, self.level, self.generator), action, anchor, self.level

    def commit(self) -> None:
        """Put the last generated frame into the cache now (`next` does it before the frame after
        it); a caller that predicts that next frame itself (self-forcing training) calls this."""
        frame, action, anchor, level = self._take_pending()
        self.model.velocity(
            frame, frame.new_full(frame.shape[:2], level), action, self.cache, commit=frame.shape[1], anchor=anchor
        )
        self.peak = max(self.peak, self.cache.frames)

    @torch.no_grad()
    def next(self, action: torch.Tensor, steps: int | None = None, solver: str | None = None) -> torch.Tensor:
        """The next latent frame (B, 1, c, h, w) under `action`; the frame before it joins the cache
        in the first solver step's DiT call (see `cached_velocity`)."""
        # noised before the new frame's noise is drawn: the same random draws as a separate commit
        pending = None if self.pending is None else self._take_pending()
        config = self.model.sampler_cfg
        last = self.clean[-1]
        noise = torch.randn(
            (last.shape[0], 1, *last.shape[1:]),
            generator=self.generator,
            device=last.device,
            dtype=last.dtype,
        )
        previous = next_anchor(torch.stack(self.clean, dim=1), self.count)  # the last clean frame(s)
        velocity = cached_velocity(self.model, self.cache, action, previous, pending)
        frame = sample(
            velocity, noise, steps or config.steps, config.shift, solver or config.solver, self.generator
        )
        frame = in_palette(self.model, frame, self.palette)
        self.peak = max(self.peak, self.cache.frames)
        self.clean = (self.clean + [frame[:, 0]])[-self.count :]
        self.pending = (frame, action, previous)
        return frame


@torch.no_grad()
def generate_latents(
    model: WorldModel,
    context: torch.Tensor,
    condition: torch.Tensor,
    new: int,
    steps: int,
    solver: str,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """The latent half of a rollout: `new` latent frames after the clean latent `context`
    (B, Tc', c, h, w), conditioned on `condition` (B, Tc' + new, r[, A + 1]) from `action_condition`.

    Returns the generated latents (B, new, c, h, w) and the most frames the KV cache held."""
    known = context.shape[1]
    if use_cache:
        stream = LatentStream(model, context, condition[:, :known], generator)
        generated = [stream.next(condition[:, j : j + 1], steps, solver) for j in range(known, known + new)]
        return torch.cat(generated, dim=1), stream.peak
    config = model.sampler_cfg
    level = config.context_noise
    palette = context_palette(model, context)
    clean = [context]  # every clean latent frame so far (each frame's anchor is the one before it)
    committed = [_noised(context, level, generator)]  # the context as the DiT sees it
    receptive = (
        model.model_cfg.depth * (model.model_cfg.context_window - 1) + 1
    )  # frames that reach the newest
    count = model.model_cfg.anchor_frames
    generated = []
    for j in range(known, known + new):
        noise = torch.randn(
            (context.shape[0], 1, *context.shape[2:]),
            generator=generator,
            device=context.device,
            dtype=context.dtype,
        )
        previous = next_anchor(torch.cat(clean[-count:], dim=1), count)  # the last clean frame(s)
        first = max(0, j - receptive + 1)
        past = torch.cat(committed, dim=1)[:, first:j]  # (B, j - first, c, h, w)
        past_anchor = model.anchors(torch.cat(clean, dim=1))[:, first:j]
        velocity = recomputed_velocity(
            model, past, past_anchor, level, condition[:, first : j + 1], first, previous
        )
        frame = sample(velocity, noise, steps, config.shift, solver, generator)  # (B, 1, c, h, w)
        frame = in_palette(model, frame, palette)
        generated.append(frame)
        clean.append(frame)
        committed.append(_noised(frame, level, generator))
    return torch.cat(generated, dim=1), 0


@torch.no_grad()
def rollout(
    model: WorldModel,
    context_frames: torch.Tensor,
    actions: torch.Tensor,
    horizon: int,
    steps: int | None = None,
    solver: str | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> RolloutResult:
    """Generate `horizon` frames after `context_frames`.

    context_frames: (B, Tc, C, H, W) in [-1, 1]; Tc = 1 + k r for a tokenizer with temporal
    compression r (any Tc >= 1 when r = 1).
    actions: (B, Ta) int64 or (B, Ta, A) float in the data convention (action t is taken after
    frame t; frame t + 1 is its consequence), indexed from the first context frame, with
    Ta >= Tc + horizon - 1: actions Tc - 1 .. Tc + horizon - 2 drive the generated frames, earlier
    ones condition the context, later ones are ignored. A clip of Tc + horizon frames and its
    Tc + horizon actions can be passed as is.
    horizon: frames to generate, a multiple of r. steps / solver default to model.sampler_cfg.
    generator: seeds the initial noise (same generator state, same frames).
    """
    config = model.sampler_cfg
    steps = steps or config.steps
    solver = solver or config.solver
    r = model.frames_per_latent
    b, context_length = context_frames.shape[:2]
    if horizon < 1 or horizon % r:
        raise ModelConfigError(
            f"horizon {horizon}: must be a positive multiple of the temporal compression {r}"
        )
    if actions.shape[0] != b or actions.shape[1] < context_length + horizon - 1:
        raise ModelConfigError(
            f"actions {tuple(actions.shape)}: need (B={b}, at least Tc + horizon - 1 = {context_length + horizon - 1}, ...)"
        )
    if model.model_cfg.action_space == "discrete" and actions.device.type != "cpu" and actions.numel():
        low, high = (
            int(v) for v in torch.aminmax(actions[:, : context_length + horizon - 1])
        )  # one sync, here
        if low < 0 or high >= model.model_cfg.num_actions:
            raise ModelConfigError(
                f"discrete actions must lie in [0, {model.model_cfg.num_actions}) (model.num_actions), "
                f"got values in [{low}, {high}]"
            )
    device = context_frames.device
    _synchronize(device)
    start = time.perf_counter()

    context = model.tokenizer.encode(context_frames)  # (B, Tc', c, h, w)
    known, new = context.shape[1], horizon // r
    condition = model.action_condition(actions, known + new)  # (B, Tc' + H', r[, A + 1])
    _synchronize(device)
    denoise_start = time.perf_counter()
    latents, peak = generate_latents(model, context, condition, new, steps, solver, use_cache, generator)
    _synchronize(device)
    denoise_seconds = time.perf_counter() - denoise_start

    # The decoder is causal too: decode with the context in front, keep the new frames.
    frames = model.tokenizer.decode(torch.cat([context, latents], dim=1), chunk=config.decode_chunk)
    frames = frames[:, context_length:].clamp(-1.0, 1.0)
    _synchronize(device)
    return RolloutResult(frames, latents, denoise_seconds, time.perf_counter() - start, peak)
