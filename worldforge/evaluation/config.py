"""Evaluation and promotion-gate configs (placeholder until the evaluation issue lands)."""

from worldforge.platform.schema import Section


class EvalConfig(Section):
    episodes: int = 8


class RegistryConfig(Section):
    max_psnr_drop_db: float = 0.5
