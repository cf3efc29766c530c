"""Dataset config: which source, how episodes are cut into clips, how shards are written."""

from worldforge.platform.schema import Section


class DataConfig(Section):
    """Placeholder until the data issue lands; the data issue owns this section."""

    source: str = "simulator"
    seed: int = 0
