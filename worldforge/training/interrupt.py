"""SIGTERM / SIGINT as a request to stop, not a kill: the trainer finishes its step, saves a
checkpoint and exits, so that `--resume` continues as if nothing had happened.

A second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once, for when the checkpoint itself hangs.
"""

from __future__ import annotations

import signal
import threading

from typing_extensions import Self


class StopRequest:
    """Within `with StopRequest() as stop:`, a signal sets `stop.signal` (its name)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
