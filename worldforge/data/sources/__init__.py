"""Where episodes come from. Every source has the same small interface:

- `name`, `action_space` (`ActionSpace`), `fps`;
- `available(wanted) -> int`: how many episodes it can give, at most `wanted`;
- `episode(index) -> Episode | None`: episode `index` in [0, available), deterministic for the
  config's seed; None when that episode is unusable (the reason is appended to `problems`);
- `describe() -> dict`: source facts for the manifest (e.g. the simulator's state layout);
- `close()`.

Optional dependencies (ale-py, gymnasium, PyAV) are imported only when their source is built.
"""

from __future__ import annotations

from worldforge.data.config import DataConfig
from worldforge.data.sources.atari import AtariSource
from worldforge.data.sources.gym import GymnasiumSource
from worldforge.data.sources.simulator import SimulatorSource
from worldforge.data.sources.video import VideoSource


def make_source(config: DataConfig):
    """The source named by `config.source`, ready to record episodes."""
    if config.source == "simulator":
        return SimulatorSource(config)
    if config.source == "atari":
        return AtariSource(config)
    if config.source == "gymnasium":
        return GymnasiumSource(config)
    if config.source == "video":
        return VideoSource(config)
    raise ValueError(f"data.source: unknown source {config.source!r}; expected simulator, atari, gymnasium or video")
