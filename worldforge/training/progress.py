"""The live progress line of a training run (rank 0, terminal): step, loss, throughput, ETA."""

from __future__ import annotations

import time

from typing_extensions import Self


class ProgressLine:
    """`with line: line.update(step, loss, samples_per_step)`; does nothing when disabled."""

    def __init__(self, name: str, steps: int, enabled: bool):
        self.name, self.steps, self.enabled = name, steps, enabled
        self._progress = None
        self._task = None
        self._last: float | None = None
        self._rate: float | None = None  # samples/s, smoothed

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"[bold]{self.name}[/bold] step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} samples/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.name, total=self.steps, loss="-", rate="-")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def advance(self, step: int) -> None:
        """Start the line at `step` (a resumed run)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)
        self._last = time.perf_counter()

    def update(self, step: int, loss: float, samples_per_step: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            rate = samples_per_step / max(now - self._last, 1e-9)
            self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
        self._last = now
        if self._progress is not None:
            shown = f"{self._rate:.1f}" if self._rate is not None else "-"
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", rate=shown)
