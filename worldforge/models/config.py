"""Model configs: tokenizer, world DiT, objective, sampler.

`ModelConfig.preset` names an entry of `PRESETS`; any field set explicitly overrides it, and
`ModelConfig.resolved()` gives the concrete config the network is built from (what a model
package stores). A pruned model is described by `heads_per_block` / `mlp_hidden_per_block`:
one entry per block, so blocks may differ in width.

Conventions shared by every config here:
- frames are float in [-1, 1], `(B, T, C, H, W)`;
- noise level `t` in [0, 1]: 0 is the clean latent, 1 pure Gaussian noise, `x_t = (1 - t) x_0 + t eps`;
- frame `t` is conditioned on action `t - 1` (the action that led to it); frame 0 on "no action".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from worldforge.core.schema import Section
from worldforge.errors import WorldforgeError


class ModelConfigError(WorldforgeError, ValueError):
    """A model/tokenizer config that cannot describe a network; says which field and why."""


class TokenizerConfig(Section):
    """Frames <-> latents. `patch`: plain patchify (no weights). `vae`: causal 3D conv VAE."""

    kind: Literal["patch", "vae"] = "patch"
    frame_channels: int = Field(3, ge=1)
    frame_size: tuple[int, int] = Field((64, 64), description="(H, W) of the frames the model is built for")
    patch_size: int = Field(8, ge=1, description="patch tokenizer: pixels per latent cell side")
    spatial_compression: Literal[4, 8] = 8
    temporal_compression: Literal[1, 2, 4] = Field(
        1, description="vae: latent frame 0 <- frame 0 alone, each later latent frame <- this many frames"
    )
    latent_channels: int = Field(16, ge=1)
    base_channels: int = Field(
        64, ge=8, description="vae: channels at full resolution; doubled per level (max 4x)"
    )
    res_blocks: int = Field(1, ge=1, description="vae: residual blocks per resolution level")
    latent_scale: float = Field(
        1.0, gt=0, description="latents = encoding * latent_scale; set it so latents have about unit std"
    )
    kl_weight: float = Field(1e-6, ge=0.0)
    reconstruction_loss: Literal["l1", "mse"] = "l1"

    @property
    def frames_per_latent(self) -> int:
        return 1 if self.kind == "patch" else self.temporal_compression

    @property
    def compression(self) -> int:
        return self.patch_size if self.kind == "patch" else self.spatial_compression

    @property
    def latent_dim(self) -> int:
        """Channels of one latent cell."""
        return self.frame_channels * self.patch_size**2 if self.kind == "patch" else self.latent_channels

    @model_validator(mode="after")
    def _frame_size_divides(self) -> TokenizerConfig:
        height, width = self.frame_size
        if height % self.compression or width % self.compression:
            raise ValueError(
                f"frame_size {self.frame_size} is not divisible by the {self.kind} tokenizer's spatial "
                f"compression {self.compression}"
            )
        return self


# The DiT presets. `tiny` trains on 2 CPU cores in minutes (64 tokens per 64x64 frame with the
# patch-8 tokenizer); the others are the usual DiT S/B/L shapes.
PRESETS: dict[str, dict] = {
    "tiny": {"depth": 4, "width": 128, "heads": 4, "mlp_ratio": 4.0, "patch_size": 1, "context_window": 8},
    "small": {"depth": 12, "width": 384, "heads": 6, "mlp_ratio": 4.0, "patch_size": 1, "context_window": 16},
    "base": {"depth": 12, "width": 768, "heads": 12, "mlp_ratio": 4.0, "patch_size": 2, "context_window": 16},
    "large": {
        "depth": 24,
        "width": 1024,
        "heads": 16,
        "mlp_ratio": 4.0,
        "patch_size": 2,
        "context_window": 32,
    },
}
ARCHITECTURE = ("depth", "width", "heads", "mlp_ratio", "patch_size", "context_window")


class ModelConfig(Section):
    """The world DiT. Fields left None come from `PRESETS[preset]`."""

    preset: str = "tiny"
    depth: int | None = Field(None, ge=1, description="number of transformer blocks")
    width: int | None = Field(None, ge=8, description="token width D")
    heads: int | None = Field(None, ge=1, description="attention heads per block (unpruned)")
    head_dim: int | None = Field(None, ge=2, description="default width // heads")
    mlp_ratio: float | None = Field(None, gt=0)
    patch_size: int | None = Field(None, ge=1, description="latent cells per token side")
    context_window: int | None = Field(
        None, ge=1, description="frames a frame attends to, itself included (latent frames)"
    )
    heads_per_block: list[int] | None = Field(None, description="pruned models: heads of each block")
    mlp_hidden_per_block: list[int] | None = Field(None, description="pruned models: MLP width of each block")
    action_space: Literal["discrete", "continuous"] = "discrete"
    num_actions: int = Field(8, ge=1, description="discrete: actions are 0..num_actions-1")
    action_dim: int = Field(2, ge=1, description="continuous: size of an action vector")
    qk_norm: bool = True
    grad_checkpointing: bool = False
    stem: Literal["linear", "conv"] = Field(
        "linear",
        description="linear: a token is a linear map of its latent patch (DiT); conv: 3x3 convolutions at "
        "latent resolution before patchifying and after unpatchifying (with a skip from the stem), so that "
        "outputs can be sharp to the latent cell, e.g. small objects moving a pixel a frame",
    )
    stem_channels: int = Field(32, ge=1, description="stem conv: channels at latent resolution")
    stack_previous: int = Field(
        0,
        ge=0,
        le=4,
        description="this many previous clean latent frames are stacked onto each frame's channels at the "
        "input (frame stacking): every token sees, at full resolution, the frame it changes from (1) and how "
        "things moved into it (2)",
    )
    action_history: int = Field(
        1,
        ge=1,
        le=8,
        description="each frame is conditioned on the actions that led to it and on those that led to the "
        "action_history - 1 frames before it (each lag its own embedding, \"no action\" before the first "
        "frame): how fast a thing moves that the actions accelerate is then read from the actions, not only "
        "from its rounded positions in the stacked frames",
    )
    warp: bool = Field(
        False,
        description="the DiT also draws a motion field (2 more output channels: each latent cell's displacement "
        "from the previous frame, in cells) and the residual objective changes from the previous frame warped "
        "by it: x0 = warp(previous, motion) + change. Moving a thing is then one number per cell whatever its "
        "colour, where a plain residual must erase it and redraw it. Needs objective.residual",
    )

    @property
    def anchor_frames(self) -> int:
        """Previous clean frames each frame's anchor holds: the stacked ones, at least the one the
        residual objective changes from."""
        return max(1, self.stack_previous)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
        return name

    def resolved(self) -> ModelConfig:
        """Every architecture field concrete; per-block lists filled in. Raises ModelConfigError."""
        values = self.model_dump()
        for key in ARCHITECTURE:
            if values[key] is None:
                values[key] = PRESETS[self.preset][key]
        if values["head_dim"] is None:
            if values["width"] % values["heads"]:
                raise ModelConfigError(
                    f"model.width {values['width']} is not divisible by model.heads {values['heads']}; "
                    "set model.head_dim explicitly"
                )
            values["head_dim"] = values["width"] // values["heads"]
        depth = values["depth"]
        if values["heads_per_block"] is None:
            values["heads_per_block"] = [values["heads"]] * depth
        if values["mlp_hidden_per_block"] is None:
            values["mlp_hidden_per_block"] = [int(values["width"] * values["mlp_ratio"])] * depth
        for key in ("heads_per_block", "mlp_hidden_per_block"):
            if len(values[key]) != depth:
                raise ModelConfigError(f"model.{key} has {len(values[key])} entries, model.depth is {depth}")
            if any(n < 1 for n in values[key]):
                raise ModelConfigError(f"model.{key}: every block needs at least 1, got {values[key]}")
        return ModelConfig(**values)


class ObjectiveConfig(Section):
    """Flow matching with diffusion forcing: every frame gets its own noise level.

    Defaults are chosen for the patch tokenizer, whose tokens are raw pixel patches (192 values):
    predicting x0 (trained through the velocity loss, as in JiT, "Back to Basics", 2025) learned far
    faster than predicting velocity on 64x64 moving-square clips (rollout PSNR 17 vs 11 dB after the
    same ~5 CPU-minutes), and half of the clips are trained as a rollout sees them (clean context,
    noisy later frames): with independent noise levels alone, an all-clean context is rare.
    `rollout_frames` trains on the model's own frames instead (self forcing), as inference sees them."""

    prediction: Literal["velocity", "x0"] = Field(
        "x0", description="what the network outputs; the loss is on velocity either way"
    )
    noise_schedule: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    detail_prob: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="chance that a frame's noise level comes from a second logit-normal (detail_logit_mean, "
        "detail_logit_std) instead: a model sampled in several steps needs the low levels trained, where its "
        "last steps draw the detail, as well as the high ones, where its first step draws the dynamics",
    )
    detail_logit_mean: float = -0.5
    detail_logit_std: float = Field(1.0, gt=0)
    per_frame_noise: bool = Field(True, description="diffusion forcing; False: one level per clip")
    clean_context_prob: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="chance that a clip's frames before a random split are clean (no loss on them), as in a rollout",
    )
    loss: Literal["velocity", "x0"] = Field(
        "velocity",
        description="what the MSE compares: velocity (rectified flow; an x0 error counts 1/t^2, so low noise "
        "dominates) or x0 (the clean frame, every noise level alike: what one- and few-step sampling needs)",
    )
    anchor_blur: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="training_context=diffusion_forcing without rollout_frames: blur each frame's anchor (the previous frames the "
        "residual starts from and the conv stem sees) by a Gaussian of random width, uniform in 0 .. this many "
        "cells, while the target stays the true frame, so that the model learns to draw a crisp frame after a "
        "soft one: a rollout's own frames are softer than the truth, and a model trained only on true anchors "
        "copies their softness on, frame after frame. 0: true anchors",
    )
    anchor_blur_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="the share of anchor frames blurred (anchor_blur); the rest are true"
    )
    anchor_noise: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="as anchor_blur, with grain: each anchor frame gets Gaussian noise of a standard deviation "
        "uniform in 0 .. this (in [-1, 1] units), the target stays true, so that grain a rollout draws is "
        "removed rather than carried on through the warp. 0: true anchors",
    )
    anchor_trail: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="as anchor_blur, with trails: this share of the anchor frames keeps, at each cell, the "
        "brighter of the frame and the one before it, so that a bright thing drawn over both its positions "
        "(the trail a rollout leaves behind a moving object) is redrawn at one. 0: true anchors",
    )
    context_targets: int | None = Field(
        None,
        ge=1,
        description="clips with a clean context: how many noisy frames after it carry loss (1: only the next "
        "frame, exactly a rollout's step); None: all of them",
    )
    training_context: Literal["diffusion_forcing", "clean"] = Field(
        "diffusion_forcing",
        description="diffusion_forcing: each frame once, at its own noise level (context is noisy, clean only "
        "before a random split, see clean_context_prob); clean: each frame twice, a clean copy as context and "
        "a noisy copy as target, so every frame is trained as a rollout step sees it (twice the tokens)",
    )
    rollout_prob: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="training_context=clean: chance that a batch's context after a random split is the "
        "model's own rollout (generated without gradient, as in inference), so training sees its own errors",
    )
    rollout_steps: int = Field(
        1, ge=1, description="sampler steps of the training rollouts (rollout_prob, rollout_frames)"
    )
    rollout_frames: int = Field(
        0,
        ge=0,
        description="self forcing: after a clip's ground-truth frames the model generates this many frames "
        "itself (the KV-cached rollout with the sampler's solver and rollout_steps, without gradient), and "
        "the loss is on the clip's last frame alone, predicted with those frames as its context and anchors; "
        "the gradient goes through that frame only, so memory does not grow with rollout_frames. Clips need "
        "rollout_frames + 2 latent frames. 0: teacher-forced diffusion forcing (clean_context_prob, "
        "context_targets and per-frame noise apply only then)",
    )
    unroll: int = Field(
        0,
        ge=0,
        le=4,
        description="rollout training with gradient (teacher-forced diffusion forcing only): after the usual "
        "pass, this many more passes over the same clips in which every frame after a random split starts "
        "from pure noise (a one-step rollout's input) and is anchored on the previous pass's prediction of "
        "the frames before it instead of the truth; the loss is the mean over passes and the gradient runs "
        "through the anchors, so a frame drawn blurry or misplaced costs again in the frames drawn from it. "
        "Each pass costs one more forward and backward",
    )
    x0_min_level: float = Field(0.05, gt=0, description="x0 prediction: v = (x_t - x0) / max(t, this)")
    warp_interpolation: Literal["bilinear", "bicubic", "bicubic_clamped"] = Field(
        "bilinear",
        description="model.warp: how the previous frame is resampled at its sub-cell displacements. Bilinear "
        "is a low-pass filter applied once per generated frame (a thin arm fades within a few frames); "
        "bicubic keeps edges but overshoots them, and a rollout amplifies the overshoot into noise; "
        "bicubic_clamped holds bicubic within the four nearest cells' range",
    )
    skip_sigma: float | None = Field(
        None,
        gt=0,
        description="residual x0 only: an EDM-style skip from the noisy frame (Karras et al. 2022, as DIAMOND "
        "uses it), with this standard deviation of the change between frames (about 0.15 on the simulator, "
        "0.1 on the robot, in [-1, 1] units). x0 = base + c_skip(t) (x_t - (1 - t) base) + c_out(t) change, "
        "base the previous frame (moved by model.warp): near clean the noisy frame passes through and the "
        "network only corrects it, so the detail steps keep what x_t already shows; at high noise c_skip -> 0 "
        "and c_out -> 1, the plain residual. None: the plain residual at every level",
    )
    residual: bool = Field(
        False,
        description="x0 prediction only: the network predicts the change from the previous clean latent frame "
        "(x0 = previous + output), so an untrained model starts as copy-last-frame and learns the motion",
    )
    action_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of frames trained with their action replaced by 'no action' (as the first frame "
        "always is): the unconditional prediction that sampler.action_guidance pushes away from",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ObjectiveConfig:
        if self.residual and self.prediction != "x0":
            raise ValueError("objective.residual needs objective.prediction='x0'")
        if self.skip_sigma is not None and not self.residual:
            raise ValueError(
                "objective.skip_sigma needs objective.residual=true (it skips around the change)"
            )
        if (self.anchor_blur or self.anchor_noise or self.anchor_trail) and (
            self.training_context != "diffusion_forcing" or self.rollout_frames
        ):
            raise ValueError(
                "objective.anchor_blur, anchor_noise and anchor_trail degrade the true anchors of teacher-forced diffusion "
                "forcing: they need "
                "objective.training_context='diffusion_forcing' and objective.rollout_frames=0"
            )
        if self.rollout_prob > 0 and self.training_context != "clean":
            raise ValueError("objective.rollout_prob needs objective.training_context='clean'")
        if self.unroll and (self.training_context != "diffusion_forcing" or self.rollout_frames):
            raise ValueError(
                "objective.unroll needs objective.training_context='diffusion_forcing' and "
                "objective.rollout_frames=0 (it unrolls the teacher-forced pass)"
            )
        if self.rollout_frames and self.training_context != "diffusion_forcing":
            raise ValueError(
                "objective.rollout_frames needs objective.training_context='diffusion_forcing' "
                "(rollout_prob is the clean context's way to train on rollouts)"
            )
        return self


class SamplerConfig(Section):
    """How a frame is denoised and how a rollout runs."""

    solver: Literal["euler", "heun", "ancestral"] = Field(
        "euler",
        description="euler/heun: the probability-flow ODE; ancestral: each step predicts the clean frame "
        "and noises it afresh to the next level (stochastic; commits to one sharp sample in few steps)",
    )
    steps: int = Field(16, ge=1)
    shift: float = Field(
        1.0, gt=0, description="timestep shift s: t -> s t / (1 + (s - 1) t); > 1 spends steps near noise"
    )
    context_noise: float = Field(0.0, ge=0.0, lt=1.0, description="noise level of committed context frames")
    action_guidance: float = Field(
        1.0,
        ge=0.0,
        description="w, classifier-free guidance on the action: each velocity is v_none + w (v - v_none), "
        "v_none the frame's with its action replaced by 'no action'; 1: off; > 1 follows the actions more "
        "strongly, at twice the DiT evaluations; needs a model trained with objective.action_dropout",
    )
    decode_chunk: int | None = Field(
        16, ge=1, description="latent frames per tokenizer decode chunk; None: all"
    )
    hold_motion: float = Field(
        0.0,
        ge=0.0,
        description="model.warp: at sampling, motions shorter than this many cells are zero, so that what the "
        "network barely moves stays exactly where it was instead of being resampled a fraction of a cell (a "
        "blur, once per generated frame). 0: off",
    )
    hold_change: float = Field(
        0.0,
        ge=0.0,
        description="objective.residual: at sampling, a cell's change whose largest channel is below this (in "
        "[-1, 1] units) is zero, so that small errors do not add up over a long rollout. 0: off",
    )
    palette: bool = Field(
        False,
        description="patch tokenizer: each generated frame is redrawn in the colours its rollout's context frames "
        "hold (each pixel the nearest of them) before it joins the context, so that no shade between two colours "
        "is fed back and compounds; for worlds drawn in a few flat colours (the simulator, Atari)",
    )
    palette_max: int = Field(
        64,
        ge=2,
        description="sampler.palette: a context with more colours than this (a photo, a fine gradient) has no "
        "palette, and its frames are left as drawn",
    )
    palette_counts: float = Field(
        0.0,
        ge=0.0,
        description="with sampler.palette: each colour drawn on at most this factor times the most pixels one context "
        "frame gives it (rounded up), the pixels farthest from it taking their next nearest colour, so that an "
        "object of a sprite world cannot grow or trail beyond its size; for worlds whose objects keep their "
        "size and stay in view; nothing without sampler.palette. 0: off",
    )
    palette_background: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="with sampler.palette: a colour covering at least this share of a context frame, or reaching "
        "from one edge of a context frame to the opposite one (a gradient's row, a stripe), is background, "
        "and a pixel the network draws in a background colour takes the background colour that pixel last "
        "showed (in the context or the rollout), so that a still background is kept as it was; for worlds "
        "whose background does not move. 0: off",
    )
    palette_sprites: bool = Field(
        False,
        description="with sampler.palette_background: every other colour that a context frame shows as one "
        "connected piece is a sprite of that shape, drawn whole in each generated frame, moved as far as the "
        "network moved its colour near it (its position kept to a fraction of a cell, drawn at whole cells); "
        "the network's other pixels of it become the background they remember; where sprites overlap, the one "
        "the network has drawn there more often in the rollout is on top; a sprite the network leaves "
        "undrawn 3 frames in a row, touching no sprite it draws, is gone. The network decides where "
        "each object goes and which hides which, the context its shape; for sprite worlds with one object per "
        "colour; nothing without sampler.palette and palette_background",
    )
