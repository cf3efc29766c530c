"""Where episodes come from. Every source has the same small interface:

- `name`, `action_space` (`ActionSpace`), `fps`;
- `available(wanted) -> int`: how many episodes it can give, at most `wanted`;
- `episode(index) -> Episode | None`: episode `index` in [0, available), deterministic for the
  config's seed; None when that episode is unusable (the reason is appended to `problems`);
- `describe() -> dict`: source facts for the manifest (e.g. the simulator's state layout);
- `close()`.

Optional dependencies (ale-py, PyAV) are imported only when their source is built.
"""

from __future__ import annotations

from worldforge.data.config import DataConfig


def make_source(config: DataConfig):
    """The source named by `config.source`, ready to record episodes."""
    if config.source == "simulator":
        from worldforge.data.sources.simulator import SimulatorSource

        return SimulatorSource(config)
    if config.source == "atari":
        from worldforge.data.sources.atari import AtariSource

        return AtariSource(config)
    if config.source == "video":
        from worldforge.data.sources.video import VideoSource

        return VideoSource(config)
    raise ValueError(f"data.source: unknown source {config.source!r}; expected simulator, atari or video")
