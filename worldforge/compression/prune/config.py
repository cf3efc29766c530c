"""The `prune` section: structured pruning of the world DiT (heads, MLP channels, blocks).

The target says what the pruned DiT keeps, never what it loses:

    target: {params: 0.7}                 keep 70% of the DiT's parameters (30% removed; 68-70% with
                                          the default tolerance 0.02)
    target: {flops: 0.5}                  keep at most 50% of the DiT's FLOPs per generated frame
    target: {depth: 3}                    keep 3 blocks (the least important ones go)
    target: {heads: 3, mlp_hidden: 256}   keep 3 heads and 256 MLP channels in every block
    target: {depth: 3, params: 0.6}       3 blocks first, then width down to 60% of the parameters

`params` and `flops` are fractions of the unpruned DiT (the tokenizer is never pruned; FLOPs are
those of the DiT in a KV-cached rollout: every solver step plus committing the frame, per frame).
This is modelopt's convention (`constraints={"params": "60%"}` keeps at most 60%).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from worldforge.core.schema import Section
from worldforge.errors import WorldforgeError

TARGET_KEYS = ("params", "flops", "depth", "heads", "mlp_hidden")
BUDGETS = ("params", "flops")


class PruneConfigError(WorldforgeError, ValueError):
    """A `prune` setting (or --target) that cannot be used; says which and what was expected."""


class RecoveryConfig(Section):
    """Fine-tuning after pruning: distillation from the unpruned model plus the flow-matching loss."""

    steps: int = Field(500, ge=0, description="optimizer steps of recovery fine-tuning; 0 skips it")
    lr: float = Field(1e-4, gt=0, description="peak learning rate of recovery")
    distill_weight: float = Field(
        1.0, ge=0, description="weight of the MSE between the pruned and the unpruned model's velocity"
    )
    task_weight: float = Field(1.0, ge=0, description="weight of the flow-matching loss on the data")


class PruneConfig(Section):
    """How to score, cut and recover. See the module docstring for `target`."""

    method: Literal["taylor", "activation"] = Field(
        "taylor",
        description=(
            "importance score: taylor = first-order loss change when a unit is removed (mask gradients); "
            "activation = energy a unit adds to the residual stream"
        ),
    )
    target: dict[str, float] = Field(
        default_factory=lambda: {"params": 0.7},
        description="what the pruned DiT keeps: params|flops (fractions), depth|heads|mlp_hidden (counts)",
    )
    units: list[Literal["heads", "mlp", "blocks"]] = Field(
        default_factory=lambda: ["blocks", "heads", "mlp"],
        description="what a params/flops budget may remove (a block goes when it is the cheapest per cost)",
    )
    tolerance: float = Field(
        0.02,
        ge=0.0,
        lt=1.0,
        description="a params/flops budget ends within [target - tolerance, target]: a block is removed only "
        "when that does not overshoot below it (0.7 keeps 68-70%)",
    )
    mlp_multiple: int = Field(
        8, ge=1, description="MLP channels are removed in groups of this many (GPU-friendly widths)"
    )
    calibration_split: str = Field("train", description="dataset split the calibration clips come from")
    calibration_clips: int = Field(64, ge=1, description="clips the importance scores are averaged over")
    recovery: RecoveryConfig = RecoveryConfig()

    @field_validator("target")
    @classmethod
    def _valid_target(cls, target: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(target) - set(TARGET_KEYS))
        if unknown:
            raise ValueError(f"unknown target key(s) {unknown}; known: {', '.join(TARGET_KEYS)}")
        if not target:
            raise ValueError(
                f"empty target; give at least one of {', '.join(TARGET_KEYS)}, e.g. {{params: 0.7}}"
            )
        if all(key in target for key in BUDGETS):
            raise ValueError("give params or flops, not both")
        for key in BUDGETS:
            if key in target and not 0 < target[key] <= 1:
                raise ValueError(f"{key}={target[key]}: the fraction kept must be in (0, 1]")
        for key in ("depth", "heads", "mlp_hidden"):
            if key in target and (target[key] < 1 or target[key] != int(target[key])):
                raise ValueError(f"{key}={target[key]}: must be a whole number >= 1 (what every block keeps)")
        return target

    @field_validator("units")
    @classmethod
    def _some_units(cls, units: list[str]) -> list[str]:
        if not units:
            raise ValueError("no units to prune; list at least one of heads, mlp, blocks")
        return sorted(set(units))


def parse_target(text: str) -> dict[str, float]:
    """`params=0.6` or `depth=3,params=0.6` (the CLI's --target) -> {"params": 0.6, ...}.

    Raises ValueError saying what was expected; PruneConfig validates the keys and values."""
    target: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key:
            raise ValueError(f"--target {text!r}: expected KEY=VALUE[,KEY=VALUE], e.g. params=0.6")
        try:
            target[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--target {text!r}: {key}={value!r} is not a number") from None
    return target
