"""Calibration for static FP8: clips from the dataset's shards and a forward loop of real rollouts.

Static scales are only as good as the activations they were measured on. A world model's
activations differ with the noise level (every solver step), with how much context sits in the
KV cache, and between prefilling context and generating: so calibration runs the rollout the
model will run, varying the context length from clip to clip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from worldforge.compression.quantize.config import QuantizeConfig, QuantizeError
from worldforge.config import WorldforgeConfig
from worldforge.data.loader import make_loader
from worldforge.data.manifest import read_manifest
from worldforge.models.streaming import rollout
from worldforge.models.world_model import WorldModel

Batch = dict[str, torch.Tensor]


def check_dataset(model: WorldModel, dataset: Path, source: Path) -> None:
    """Raise QuantizeError unless `dataset`'s frames and actions fit the model of package `source`."""
    manifest = read_manifest(dataset)
    height, width = model.tokenizer_cfg.frame_size
    if tuple(manifest.frame_shape[:2]) != (height, width):
        raise QuantizeError(
            f"{source}/config.json: tokenizer.frame_size {height}x{width}, but {dataset}/manifest.json has "
            f"frame_shape {manifest.frame_shape[0]}x{manifest.frame_shape[1]}"
        )
    space, dit = manifest.action_space, model.model_cfg
    if space.kind != dit.action_space or (space.kind == "discrete" and space.n > dit.num_actions):
        raise QuantizeError(
            f"{source}/config.json: model.action_space {dit.action_space!r} (num_actions {dit.num_actions}) "
            f"cannot take the {space.kind} actions of {dataset}/manifest.json"
        )


def calibration_batches(dataset: Path, config: WorldforgeConfig, qcfg: QuantizeConfig) -> list[Batch]:
    """The first `qcfg.calibration_clips` clips of split `qcfg.calibration_split`, in the loader's
    batches of `data.loader.batch_size` (the last one cut to size): {"frames", "actions"}.
    Raises QuantizeError when the split has fewer clips."""
    batches, count = [], 0
    for batch in make_loader(dataset, qcfg.calibration_split, config.data, rank=0, world_size=1):
        take = min(batch["frames"].shape[0], qcfg.calibration_clips - count)
        batches.append({"frames": batch["frames"][:take], "actions": batch["actions"][:take]})
        count += take
        if count == qcfg.calibration_clips:
            return batches
    raise QuantizeError(
        f"quantize.calibration_clips={qcfg.calibration_clips}, but split {qcfg.calibration_split!r} of "
        f"{dataset} has only {count} clips of data.clip_frames={config.data.clip_frames}; "
        "lower quantize.calibration_clips"
    )


def calibration_loop(
    batches: list[Batch], steps: int, seed: int, seen: list[int]
) -> Callable[[nn.Module], None]:
    """A forward loop that rolls the model out on every batch. A clip of L latent frames keeps
    1 + (i mod (L - 1)) of them as context (batch i) and generates the rest in `steps` solver
    steps, so the quantizers see every context length and noise level, prefill and cached steps.
    Appends each rollout's number of clips to `seen`."""

    def loop(model: nn.Module) -> None:
        device = next(model.parameters()).device
        r = model.frames_per_latent
        generator = torch.Generator(device).manual_seed(seed)
        for index, batch in enumerate(batches):
            frames = batch["frames"].to(device)  # (B, T, C, H, W)
            actions = batch["actions"].to(device)  # (B, T) or (B, T, A)
            latent = 1 + (frames.shape[1] - 1) // r  # whole latent frames in the clip
            if latent < 2:
                raise QuantizeError(
                    f"data.clip_frames={frames.shape[1]}: calibration rollouts need >= {1 + r} frames"
                )
            known = 1 + index % (latent - 1)
            context = frames[:, : 1 + (known - 1) * r]
            rollout(model, context, actions, (latent - known) * r, steps=steps, generator=generator)
            seen.append(frames.shape[0])

    return loop
