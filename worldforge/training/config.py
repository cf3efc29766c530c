"""Training config (placeholder until the pretraining issue lands; that issue owns this section)."""

from worldforge.platform.schema import Section


class TrainConfig(Section):
    steps: int = 100
