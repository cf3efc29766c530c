"""Runtime: device selection, seeding, logging, and distributed init.

`init_distributed` works in three situations with the same code: one process with no launcher
(world size 1, no process group needed), several processes under the `deepspeed` launcher or
torchrun (RANK/WORLD_SIZE/MASTER_ADDR set by them), on CPU (gloo) or GPU (NCCL).
"""

from __future__ import annotations

import logging
import os
import random
import socket
from dataclasses import dataclass

import numpy as np
import torch

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def select_device(preference: str = "auto") -> torch.device:
    """`auto` -> cuda if present, else cpu; `cpu`/`cuda`/`cuda:N` are taken as given."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} requested but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(level: str | int = "INFO") -> None:
    """Configure the root logger once (idempotent); rank > 0 logs warnings only."""
    rank = int(os.environ.get("RANK", "0"))
    effective = level if rank == 0 else "WARNING"
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=effective, format=LOG_FORMAT)
    else:
        root.setLevel(effective)
    # Every HTTP request of the Prefect and MLflow clients would otherwise be an INFO line.
    for chatty in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now (a rendezvous, a local server)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def launched_distributed() -> bool:
    """True when a launcher (deepspeed, torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device | None = None) -> DistInfo:
    """Initialise torch.distributed when launched as several processes; a no-op for one.

    The backend follows the device: NCCL for CUDA, gloo for CPU (`DS_ACCELERATOR=cpu`)."""
    import torch.distributed as dist

    device = device or select_device()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)
    if not launched_distributed():
        return DistInfo(0, 1, 0, None)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def configure_prefect_env(project_root: os.PathLike | str) -> None:
    """Point Prefect at the project (home, database) and keep it offline, unless already configured.

    Called by the CLI and the flows' entry points before Prefect is imported; never at import time."""
    from pathlib import Path

    home = Path(os.environ.setdefault("PREFECT_HOME", str(Path(project_root) / ".prefect")))
    home.mkdir(parents=True, exist_ok=True)  # Prefect makes only the last level itself
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def configure_deepspeed_env() -> None:
    """Use DeepSpeed's CPU accelerator where there is no GPU, unless the user chose one."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
