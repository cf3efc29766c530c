"""The `pipeline` section: which compression stages `train_and_compress` runs after pretraining."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worldforge.core.schema import Section


class PipelineConfig(Section):
    compress: list[Literal["distill", "prune", "quantize"]] = Field(
        default_factory=list,
        description="compression stages after pretraining, in order; each takes the previous stage's package, "
        "is evaluated against it, registered and offered for promotion",
    )
    promote: bool = Field(True, description="offer every registered version to the promotion gates")
