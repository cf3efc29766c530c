"""DeepSpeed checkpoints of a run, with the trainer's own state, newest K kept.

    <dir>/step00000200/            one checkpoint (DeepSpeed's tag)
        mp_rank_00_model_states.pt, *_optim_states.pt   DeepSpeed: module, optimizer, lr scheduler
        <name>/                   another engine of the run (a critic's), DeepSpeed's files under tag "state"
        trainer_rank{r}.pt        per rank: step, data position, EMA shares, RNG states
        worldforge.json           written last, by rank 0: the checkpoint is complete
    <dir>/latest                  DeepSpeed's pointer (its `zero_to_fp32.py` reads it)

A checkpoint without `worldforge.json` was cut short (killed mid-save) and is ignored on resume.
Every method that touches the engine is a collective: all ranks call it.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldforge.errors import WorldforgeError
from worldforge.training.launch import barrier

log = logging.getLogger(__name__)
COMPLETE = "worldforge.json"


class CheckpointError(WorldforgeError, RuntimeError):
    """A checkpoint that cannot be resumed from; names the folder and what differs."""


def load_tensors(path: Path) -> dict[str, Any]:
    """A checkpoint file written by torch.save, read without unpickling code (weights_only): only
    tensors, numbers, strings and containers of them. CheckpointError names the file otherwise."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete") from None
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: holds objects other than tensors and plain values, which are not unpickled "
            f"(a checkpoint of an older worldforge, or not a worldforge checkpoint): {str(error).splitlines()[0]}"
        ) from None


def rng_state() -> dict[str, Any]:
    """Every generator's state in types `torch.load(weights_only=True)` accepts (no pickled numpy)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tag(step: int) -> str:
    return f"step{step:08d}"


class Checkpointer:
    def __init__(self, directory: Path, keep: int, rank: int, world_size: int):
        self.directory = Path(directory)
        self.keep, self.rank, self.world_size = keep, rank, world_size

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p.parent for p in self.directory.glob(f"step*/{COMPLETE}"))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def clear(self) -> None:
        """Start over: remove earlier checkpoints of this directory (rank 0), then wait for it."""
        if self.rank == 0 and self.directory.exists():
            log.info(
                "starting fresh: removing the checkpoints in %s (use resume to continue them)", self.directory
            )
            shutil.rmtree(self.directory)
        barrier()

    def save(
        self,
        engine,
        step: int,
        rank_state: dict[str, Any],
        meta: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Save a checkpoint at `step` (and the `extra` engines of the run, by name) and drop the
        oldest beyond `keep`. Collective."""
        folder = self.directory / tag(step)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({**rank_state, "rng": rng_state()}, folder / f"trainer_rank{self.rank}.pt")
        engine.save_checkpoint(str(self.directory), tag=tag(step))
        for name, other in (extra or {}).items():
            other.save_checkpoint(str(folder / name), tag="state")
        barrier()  # every rank's files are on disk
        if self.rank == 0:
            record = {**meta, "step": step, "world_size": self.world_size}
            (folder / COMPLETE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
            for old in self.complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return folder

    def load(
        self, engine, folder: Path, expected: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Restore the engine (module, optimizer, scheduler), the `extra` engines and the RNG from
        `folder`; returns this rank's trainer state. `expected` entries (e.g. the package config)
        must match the record."""
        record = json.loads((folder / COMPLETE).read_text())
        if record.get("world_size") != self.world_size:
            raise CheckpointError(
                f"{folder}: saved by {record.get('world_size')} processes, resumed with {self.world_size}; "
                "resume with the same number of processes (the data position is per rank)"
            )
        for key, value in expected.items():
            if json.loads(json.dumps(record.get(key), default=str)) != json.loads(
                json.dumps(value, default=str)
            ):
                raise CheckpointError(
                    f"{folder / COMPLETE}: {key} differs from this run's; resume with the config the "
                    "checkpoint was made with, or start fresh (without resume)"
                )
        path, _ = engine.load_checkpoint(str(self.directory), tag=folder.name)
        if path is None:
            raise CheckpointError(f"{folder}: DeepSpeed could not load this checkpoint")
        for name, other in (extra or {}).items():
            path, _ = other.load_checkpoint(str(folder / name), tag="state")
            if path is None:
                raise CheckpointError(
                    f"{folder / name}: DeepSpeed could not load the {name} engine's checkpoint"
                )
        state = load_tensors(folder / f"trainer_rank{self.rank}.pt")
        restore_rng(state.pop("rng"))
        return state
