"""`WorldModel`: the tokenizer, the world DiT and the configs that say how to train and sample it.

A model package's `config.json` is `package_config(model)`:

    {"kind": "world_model", "tokenizer": {...}, "model": {...}, "objective": {...}, "sampler": {...}}

and `build_world_model(that dict)` rebuilds the same module (weights are loaded separately, from
safetensors). The "model" section is stored resolved (no preset lookups left), so a package keeps
describing the same network when presets change and can describe pruned networks.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from worldforge.core.schema import describe_errors
from worldforge.models.config import (
    ModelConfig,
    ModelConfigError,
    ObjectiveConfig,
    SamplerConfig,
    TokenizerConfig,
)
from worldforge.models.dit import WorldDiT, action_condition, no_action
from worldforge.models.flow import hold_small, previous_frames, to_velocity
from worldforge.models.tokenizers import build_tokenizer

KIND = "world_model"
SECTIONS = {
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "objective": ObjectiveConfig,
    "sampler": SamplerConfig,
}


class WorldModel(nn.Module):
    def __init__(
        self,
        tokenizer_cfg: TokenizerConfig,
        model_cfg: ModelConfig,
        objective_cfg: ObjectiveConfig,
        sampler_cfg: SamplerConfig,
    ):
        super().__init__()
        self.tokenizer_cfg = tokenizer_cfg
        self.objective_cfg = objective_cfg
        self.sampler_cfg = sampler_cfg
        if model_cfg.warp and not (objective_cfg.residual and objective_cfg.prediction == "x0"):
            raise ModelConfigError(
                "model.warp moves the previous frame that the residual objective changes from: it needs "
                "objective.residual=true (and objective.prediction='x0')"
            )
        if (sampler_cfg.hold_motion or sampler_cfg.hold_change) and not (
            objective_cfg.residual and objective_cfg.prediction == "x0"
        ):
            raise ModelConfigError(
                "sampler.hold_motion and hold_change keep what the residual objective barely changes: they need "
                "objective.residual=true (and objective.prediction='x0')"
            )
        if sampler_cfg.hold_motion and not model_cfg.warp:
            raise ModelConfigError("sampler.hold_motion holds the motion field of model.warp: it needs model.warp=true")
        if sampler_cfg.palette and tokenizer_cfg.kind != "patch":
            raise ModelConfigError(
                f"sampler.palette redraws a frame's pixels: it needs tokenizer.kind='patch' (latents that are "
                f"pixels), not {tokenizer_cfg.kind!r}; set sampler.palette=false"
            )
        self.tokenizer = build_tokenizer(tokenizer_cfg)
        self.dit = WorldDiT(model_cfg, tokenizer_cfg.latent_dim, tokenizer_cfg.frames_per_latent)
        self.model_cfg = self.dit.config  # resolved

    @classmethod
    def from_config(
        cls,
        tokenizer_cfg: TokenizerConfig | None = None,
        model_cfg: ModelConfig | None = None,
        objective_cfg: ObjectiveConfig | None = None,
        sampler_cfg: SamplerConfig | None = None,
    ) -> WorldModel:
        """Sections left None take their defaults."""
        return cls(
            tokenizer_cfg or TokenizerConfig(),
            model_cfg or ModelConfig(),
            objective_cfg or ObjectiveConfig(),
            sampler_cfg or SamplerConfig(),
        )

    @property
    def frames_per_latent(self) -> int:
        return self.tokenizer.frames_per_latent

    def anchors(self, clean: torch.Tensor) -> torch.Tensor:
        """Each frame's anchor, (B, T, c, h, w) -> (B, T, k c, h, w): its k previous clean frames
        (`model.stack_previous`, at least 1 for the residual objective); see `previous_frames`."""
        return previous_frames(clean, self.model_cfg.anchor_frames)

    def action_condition(self, actions: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """Data-convention actions (B, T[, A]) -> per-latent-frame conditioning; see dit.action_condition."""
        return action_condition(actions, latent_frames, self.frames_per_latent, self.model_cfg)

    def no_action(self, condition: torch.Tensor) -> torch.Tensor:
        """The "no action" conditioning in the shape of `condition`."""
        return no_action(condition, self.model_cfg)

    def guided_velocity(
        self,
        latents: torch.Tensor,
        noise_levels: torch.Tensor,
        condition: torch.Tensor,
        cache=None,
        first_frame: int = 0,
        anchor: torch.Tensor | None = None,
        commit: int = 0,
    ) -> torch.Tensor:
        """`velocity` of the last frame of `latents` under `sampler.action_guidance` w: v_none +
        w (v - v_none), v_none the same call with the last frame's action replaced by "no action"
        (classifier-free guidance on the action; the context keeps its own). w = 1 is `velocity`.
        commit: as `velocity`; the frames it commits join the cache in the first call, and the
        unguided call attends to them there."""
        v = self.velocity(latents, noise_levels, condition, cache, commit, first_frame, anchor)
        w = self.sampler_cfg.action_guidance
        if w == 1:
            return v
        latents, noise_levels, condition, anchor = _uncommitted(commit, latents, noise_levels, condition, anchor)
        unguided = torch.cat([condition[:, :-1], self.no_action(condition[:, -1:])], dim=1)
        v_none = self.velocity(latents, noise_levels, unguided, cache, first_frame=first_frame, anchor=anchor)
        return v_none + w * (v - v_none)

    def velocity(
        self,
        latents: torch.Tensor,
        noise_levels: torch.Tensor,
        condition: torch.Tensor,
        cache=None,
        commit: int = 0,
        first_frame: int = 0,
        anchor: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The velocity field at (latents, noise_levels): (B, T, c, h, w). Arguments as
        WorldDiT.forward; anchor: each frame's previous clean latent frames (`anchors`), for the
        `residual` objective and `model.stack_previous`). With `commit=k` the first k frames join
        the cache and the velocity is the other frames' (B, T - k, c, h, w), None when k = T."""
        output = self.dit(
            latents, noise_levels, condition, cache=cache, commit=commit, first_frame=first_frame, anchor=anchor
        )
        if output is None:
            return None
        latents, noise_levels, anchor = _uncommitted(commit, latents, noise_levels, anchor)
        sampler = self.sampler_cfg
        if not self.training and (sampler.hold_motion or sampler.hold_change):
            output = hold_small(output, latents.shape[2], sampler.hold_motion, sampler.hold_change)
        return to_velocity(output, latents, noise_levels, self.objective_cfg, anchor=anchor)


def _uncommitted(commit: int, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Each per-frame tensor (B, T, ...) without its first `commit` frames, which joined the cache
    and have no output (None stays None)."""
    return tuple(None if x is None else x[:, commit:] for x in tensors)


def _section(package: dict[str, Any], name: str):
    try:
        return SECTIONS[name].model_validate(package.get(name, {}))
    except ValidationError as error:
        raise ModelConfigError(describe_errors(error, f"{KIND} config section {name!r}")) from None


def build_world_model(package: dict[str, Any]) -> WorldModel:
    """Build the (randomly initialised) model a package config describes, on the current default
    device (`with torch.device("meta"):` to check shapes without allocating).

    Raises ModelConfigError (a ValueError) naming the section and key at fault."""
    if package.get("kind") != KIND:
        raise ModelConfigError(f"config 'kind' is {package.get('kind')!r}, expected {KIND!r}")
    return WorldModel(*(_section(package, name) for name in SECTIONS))


def package_config(model: WorldModel) -> dict[str, Any]:
    """The `config.json` dict that `build_world_model` turns back into this model's architecture."""
    return {
        "kind": KIND,
        "tokenizer": model.tokenizer_cfg.model_dump(mode="json"),
        "model": model.model_cfg.model_dump(mode="json"),
        "objective": model.objective_cfg.model_dump(mode="json"),
        "sampler": model.sampler_cfg.model_dump(mode="json"),
    }
