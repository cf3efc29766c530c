"""Endless micro-batches that know where they are, so a resumed run reads on from the same batch.

The position is (epoch, batches of that epoch already drawn). The loader's order is a function of
(seed, epoch, rank, worker) alone, so resuming replays epoch `epoch` and skips the batches already
drawn; nothing is read twice or left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class EpochLoader(Protocol):
    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


class BatchStream:
    """`next(stream)` -> the next batch dict, epoch after epoch; `state()` / `restore()` for checkpoints."""

    def __init__(self, loader: EpochLoader, description: str = "the training split"):
        self.loader = loader
        self.description = description
        self.epoch, self.batch = 0, 0
        self._iterator: Iterator[dict[str, Any]] | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._iterator = None

    def _open(self) -> Iterator[dict[str, Any]]:
        self.loader.set_epoch(self.epoch)
        iterator = iter(self.loader)
        for skipped in range(self.batch):
            if next(iterator, None) is None:
                raise ValueError(
                    f"{self.description}: cannot resume at batch {self.batch} of epoch {self.epoch}, the epoch "
                    f"has only {skipped} batches (did the dataset or the batch size change?)"
                )
        return iterator

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, Any]:
        for _ in range(2):  # the current epoch, else the next one
            if self._iterator is None:
                self._iterator = self._open()
            batch = next(self._iterator, None)
            if batch is not None:
                self.batch += 1
                return batch
            self.epoch, self.batch, self._iterator = self.epoch + 1, 0, None
        raise ValueError(f"{self.description}: an epoch yielded no batches (is the split empty?)")
