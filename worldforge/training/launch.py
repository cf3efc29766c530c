"""Process setup for the trainer: the device, the process group DeepSpeed needs, and precision.

Three ways to start, one code path:
- one process, no launcher: a world of one is set up on a free local port (DeepSpeed always wants
  a process group and LOCAL_RANK, and would otherwise look for MPI);
- `torchrun --nproc_per_node N ...` or `deepspeed --num_gpus N ...`: the launcher's RANK,
  WORLD_SIZE, MASTER_ADDR/PORT and LOCAL_RANK are used as given;
- several nodes: the same, with the launcher's hostfile (infra/deepspeed) or a Kubernetes
  job (infra/k8s).
Backend: NCCL on GPU, gloo on CPU (with `DS_ACCELERATOR=cpu`, set here when there is no GPU).
"""

from __future__ import annotations

import os

import torch

from worldforge.core.runtime import (
    DistInfo,
    configure_deepspeed_env,
    free_port,
    launched_distributed,
    select_device,
)


def setup_distributed(device_preference: str = "auto") -> tuple[DistInfo, torch.device]:
    """Initialise (once per process) the process group DeepSpeed runs on; returns it and this
    process's device (`cuda:LOCAL_RANK` on GPU)."""
    configure_deepspeed_env()
    import deepspeed
    import torch.distributed as dist

    device = select_device(device_preference)
    if not launched_distributed():
        # A world of one: what a launcher would have set, on a port nobody else uses.
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
        ):
            os.environ.setdefault(key, value)
        if not dist.is_initialized():
            os.environ["MASTER_PORT"] = str(free_port())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cpu" and os.environ.get("WORLD_SIZE") == "1":
            skip_shared_memory_op()
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend), device


def skip_shared_memory_op() -> None:
    """DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op when it starts (about 40 s
    on 2 cores, once per machine: the build is cached in ~/.cache/torch_extensions). A world of one
    process has nothing to reduce, so it is marked unavailable there and the backend goes without
    it, as it does on a machine where the op cannot be built; worlds of two or more keep it."""
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on GPU, fp32 on CPU; an explicit choice is kept."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" else "fp32"


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
