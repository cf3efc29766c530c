"""The `quantize` section: post-training FP8 (E4M3) quantization of a model package.

Two backends, one set of layers:

    backend: modelopt   recipe fp8_static: weights and activations per tensor, scales calibrated
                        by rolling the model out on clips of the dataset. Real FP8 matmuls on
                        CUDA compute capability >= 8.9 (after `mtq.compress`), simulated elsewhere.
    backend: torchao    recipe fp8_dynamic: activations scaled per row/tensor at run time, weights
                        per row/tensor (needs CUDA >= 8.9); fp8_weight_only: FP8 weights, matmuls
                        in the model's precision (runs anywhere). `auto` picks dynamic where it can.

`exclude` lists glob patterns over module names (`dit.blocks.3.adaln`); a layer is left in high
precision when a pattern matches its name or the name of a module that contains it. The defaults
keep the precision-sensitive parts out: the patch embedding, the timestep and action embeddings,
every AdaLN modulation, the final layer (its AdaLN and the output projection), and the first and
last convolution of a VAE tokenizer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from worldforge.core.schema import Section
from worldforge.errors import WorldforgeError

DEFAULT_EXCLUDE = (
    "dit.patch_embed",
    "dit.t_embed",
    "dit.action_embed",
    "dit.blocks.*.adaln",
    "dit.final",
    "tokenizer.encoder.conv_in",
    "tokenizer.decoder.conv_out",
)
RECIPES = {"modelopt": ("fp8_static",), "torchao": ("fp8_dynamic", "fp8_weight_only")}


class QuantizeError(WorldforgeError, ValueError):
    """A quantization that cannot be done as asked; the message names the file or field at fault."""


class QuantizeConfig(Section):
    """How to quantize; see the module docstring."""

    backend: Literal["modelopt", "torchao"] = "modelopt"
    recipe: Literal["auto", "fp8_static", "fp8_dynamic", "fp8_weight_only"] = Field(
        "auto",
        description="auto: modelopt -> fp8_static; torchao -> fp8_dynamic on CUDA >= 8.9, "
        "else fp8_weight_only",
    )
    granularity: Literal["per_row", "per_tensor"] = Field(
        "per_row",
        description="torchao: one FP8 scale per row (output channel / token) or per tensor; "
        "modelopt's fp8_static is always per tensor",
    )
    exclude: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDE),
        description="glob patterns of module names kept in high precision (with everything inside them)",
    )
    calibration_clips: int = Field(
        32, ge=1, description="modelopt: clips rolled out to calibrate activation scales"
    )
    calibration_split: str = Field("train", description="dataset split the calibration clips come from")
    calibration_steps: int | None = Field(
        None, ge=1, description="solver steps of the calibration rollouts; default sampler.steps"
    )
    compile: bool = Field(
        True,
        description="torchao on CUDA: torch.compile the quantized layers (fuses activation scaling); "
        "not applied on CPU",
    )
    device: str = Field("auto", description="where to calibrate: auto (cuda if present), cpu, cuda, cuda:N")

    @model_validator(mode="after")
    def _recipe_fits_backend(self) -> QuantizeConfig:
        allowed = RECIPES[self.backend]
        if self.recipe != "auto" and self.recipe not in allowed:
            raise ValueError(
                f"recipe {self.recipe!r} is not a {self.backend} recipe; {self.backend} offers "
                f"{', '.join(allowed)} (or auto)"
            )
        return self
