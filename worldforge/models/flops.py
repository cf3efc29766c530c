"""Cost of a model: parameter counts and FLOPs.

FLOPs are counted, not estimated by formula: the model is rebuilt from its package config on the
meta device (no memory, no compute) and run under `torch.utils.flop_counter.FlopCounterMode`,
which counts every matmul, convolution and attention product (2 FLOPs per multiply-add). A
pruned model counts as pruned, since its config describes its per-block widths.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from worldforge.models.sampler import evaluations
from worldforge.models.world_model import WorldModel, build_world_model, package_config


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_copy(model: WorldModel) -> WorldModel:
    with torch.device("meta"):
        return build_world_model(package_config(model))


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _latent_shape(model: WorldModel) -> tuple[int, int, int]:
    config = model.tokenizer_cfg
    height, width = config.frame_size
    return model.tokenizer.latent_channels, height // config.compression, width // config.compression


def forward_flops(model: WorldModel, latent_frames: int) -> int:
    """FLOPs of one DiT forward over a clip of `latent_frames` latent frames at the tokenizer's
    frame_size (as in training; a training step costs about 3x this per clip)."""
    meta = _meta_copy(model)
    latents = torch.zeros(1, latent_frames, *_latent_shape(model), device="meta")
    levels = torch.zeros(1, latent_frames, device="meta")
    condition = _meta_condition(meta, latent_frames)
    return _counted(lambda: meta.dit(latents, levels, condition, anchor=_meta_anchor(meta, latents)))


def _meta_anchor(model: WorldModel, latents: torch.Tensor) -> torch.Tensor:
    return latents.repeat(1, 1, model.model_cfg.anchor_frames, 1, 1)


def _meta_condition(model: WorldModel, latent_frames: int) -> torch.Tensor:
    r = model.frames_per_latent
    if model.model_cfg.action_space == "discrete":
        return torch.zeros(1, latent_frames, r, dtype=torch.long, device="meta")
    return torch.zeros(1, latent_frames, r, model.model_cfg.action_dim + 1, device="meta")


def flops_per_frame(model: WorldModel, steps: int | None = None, solver: str | None = None) -> int:
    """FLOPs to generate one frame in a KV-cached rollout whose context window is full: DiT solver
    evaluations + committing it to the cache + decoding it. Breakdown: `rollout_flops`."""
    return rollout_flops(model, steps, solver)["total"]


def rollout_flops(model: WorldModel, steps: int | None = None, solver: str | None = None) -> dict[str, int]:
    """Per generated frame, in a KV-cached rollout whose context window is full:
    {"denoise": every solver evaluation of the DiT, "commit": adding the frame to the
    cache, "decode": the tokenizer decoding it, "total": the sum}, per output frame (a latent frame
    holding r frames is shared among them). steps / solver default to the model's sampler config;
    `sampler.action_guidance` doubles the evaluations."""
    steps = steps or model.sampler_cfg.steps
    solver = solver or model.sampler_cfg.solver
    guided = 1 if model.sampler_cfg.action_guidance == 1 else 2  # and once more without the action
    meta = _meta_copy(model)
    r = meta.frames_per_latent
    shape = _latent_shape(model)
    cache = meta.dit.new_cache()
    context = cache.max_frames
    if context:
        latents = torch.zeros(1, context, *shape, device="meta")
        meta.dit(
            latents,
            torch.zeros(1, context, device="meta"),
            _meta_condition(meta, context),
            cache=cache,
            commit=context,
            anchor=_meta_anchor(meta, latents),
        )
    frame = torch.zeros(1, 1, *shape, device="meta")
    step = _counted(
        lambda: meta.dit(
            frame,
            torch.zeros(1, 1, device="meta"),
            _meta_condition(meta, 1),
            cache=cache,
            anchor=_meta_anchor(meta, frame),
        )
    )

    commit = _counted(  # the frame's keys and values, without the output head (see WorldDiT.forward)
        lambda: meta.dit(
            frame,
            torch.zeros(1, 1, device="meta"),
            _meta_condition(meta, 1),
            cache=cache,
            commit=1,
            anchor=_meta_anchor(meta, frame),
        )
    )

    def decode(latent_frames: int):
        return lambda: meta.tokenizer.decode(torch.zeros(1, latent_frames, *shape, device="meta"))

    decode_latent = _counted(decode(2)) - _counted(decode(1))  # one more latent frame in a stream
    costs = {
        "denoise": evaluations(solver, steps) * guided * step // r,
        "commit": commit // r,
        "decode": decode_latent // r,
    }
    costs["total"] = sum(costs.values())
    return costs
