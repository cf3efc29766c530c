"""What a training run shows a person while it runs (rank 0): step, loss, throughput, ETA.

On a terminal, one live rich bar; log records (worldforge's, Prefect's, DeepSpeed's) print above
it instead of being glued to it, and each validation prints one short line. Off a terminal
(Prefect workers, CI, `make demo > log`), a plain line every `every_steps` steps or
`every_seconds` seconds, whichever comes first, and the same validation line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from typing_extensions import Self

PLAIN_EVERY_SECONDS = 30.0


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def validation_line(step: int, metrics: dict[str, float]) -> str:
    """`validation @200: PSNR 21.30 dB (copy-last 19.10) SSIM 0.741 agent 0.028 (0.40x) balls 0.090
    (0.95x) actions +0.84 dB realism 31.2 dB (recorded 48.1) compact balls 0.88` (actions: action
    sensitivity, `evaluation/sensitivity.py`)."""
    value = {key.split("/")[-1]: v for key, v in metrics.items()}
    parts = [f"validation @{step}:"]
    if "psnr_mean" in value:
        baseline = value.get("baseline_psnr_mean")
        parts.append(f"PSNR {value['psnr_mean']:.2f} dB" + (f" (copy-last {baseline:.2f})" if baseline else ""))
    if "ssim_mean" in value:
        parts.append(f"SSIM {value['ssim_mean']:.3f}")
    for label, key, what in (("agent", "agent_position_error", "agent"), ("balls", "object_position_error", "object")):
        if key in value:
            ratio = value.get(f"{what}_error_ratio")
            parts.append(f"{label} {value[key]:.3f}" + (f" ({ratio:.2f}x)" if ratio is not None else ""))
    if "action_sensitivity_db_mean" in value:
        parts.append(f"actions {value['action_sensitivity_db_mean']:+.2f} dB")
    if "realism_psnr_mean" in value:
        truth = value.get("truth_realism_psnr_mean")
        recorded = f" (recorded {truth:.1f})" if truth else ""
        parts.append(f"realism {value['realism_psnr_mean']:.1f} dB{recorded}")
    if "object_survival" in value:
        parts.append(f"compact balls {value['object_survival']:.2f}")
    if len(parts) == 1:  # a task with other metrics: the first few
        parts += [f"{k}={v:.4g}" for k, v in list(value.items())[:6]]
    return " ".join(parts)


class ProgressLine:
    """`with line: line.update(step, loss, samples_per_step)`; does nothing when disabled.

    `stream`: where plain lines go (default sys.stderr); `terminal`: force bar (True) or plain
    lines (False); default: a bar when `stream` is a terminal."""

    def __init__(
        self,
        name: str,
        steps: int,
        enabled: bool,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        every_steps: int = 100,
        every_seconds: float = PLAIN_EVERY_SECONDS,
    ):
        self.name, self.steps, self.enabled = name, steps, enabled
        self.stream = stream
        self.terminal = terminal
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self._progress = None
        self._task = None
        self._last: float | None = None
        self._rate: float | None = None  # samples/s, smoothed
        self._step_rate: float | None = None  # steps/s, smoothed
        self._printed_at = 0.0
        self._printed_step = 0
        self._handlers: list[tuple[logging.StreamHandler, TextIO]] = []

    @property
    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def _use_bar(self) -> bool:
        if self.terminal is not None:
            return self.terminal
        return bool(getattr(self._out, "isatty", lambda: False)())

    def __enter__(self) -> Self:
        if not self.enabled:
            return self
        self._printed_at = time.monotonic()
        if self._use_bar():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"[bold]{self.name}[/bold] step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} samples/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self._out),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.name, total=self.steps, loss="-", rate="-")
            self._route_logs_above_the_bar()
        return self

    def __exit__(self, *exc) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def _route_logs_above_the_bar(self) -> None:
        """Log handlers that write to the terminal write through the bar's console while it is live
        (rich redraws the bar below each record), instead of into the middle of the bar's line."""
        console_file = self._progress.console.file
        loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("prefect", "worldforge", "DeepSpeed"))]
        for logger in loggers:
            for handler in logger.handlers:
                console_handler = type(handler) is logging.StreamHandler or (
                    type(handler).__name__ == "PrefectConsoleHandler"
                )
                terminal = getattr(handler, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
                if console_handler and terminal:
                    self._handlers.append((handler, handler.stream))
                    handler.setStream(_ConsoleWriter(self._progress.console, console_file))

    def advance(self, step: int) -> None:
        """Start the line at `step` (a resumed run)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)
        self._last = time.perf_counter()
        self._printed_step = step

    def update(self, step: int, loss: float, samples_per_step: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            elapsed = max(now - self._last, 1e-9)
            rate, step_rate = samples_per_step / elapsed, 1.0 / elapsed
            self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
            self._step_rate = step_rate if self._step_rate is None else 0.9 * self._step_rate + 0.1 * step_rate
        self._last = now
        if not self.enabled:
            return
        if self._progress is not None:
            shown = f"{self._rate:.1f}" if self._rate is not None else "-"
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", rate=shown)
            return
        due = step - self._printed_step >= self.every_steps or time.monotonic() - self._printed_at >= self.every_seconds
        if due or step == self.steps:
            self.print(self.plain_line(step, loss))
            self._printed_at, self._printed_step = time.monotonic(), step

    def plain_line(self, step: int, loss: float) -> str:
        rate = f"{self._rate:.1f}" if self._rate is not None else "-"
        eta = (self.steps - step) / self._step_rate if self._step_rate else None
        return f"{self.name} step {step}/{self.steps} loss {loss:.4f} {rate} samples/s ETA {_eta(eta)}"

    def print(self, line: str) -> None:
        """A line for the person watching: above the bar on a terminal, plain otherwise."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=self._out, flush=True)


class _ConsoleWriter:
    """A text stream that writes through a rich console (so a live bar stays below the text)."""

    def __init__(self, console, file: TextIO):
        self.console, self.file = console, file

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(text.rstrip("\n"), highlight=False, markup=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def isatty(self) -> bool:
        return True
