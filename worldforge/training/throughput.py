"""Speed and cost of training: samples/s, tokens/s, model FLOPs utilisation, peak memory.

FLOPs per sample are counted, not estimated: the first micro-batch of a run (forward and backward)
runs under `torch.utils.flop_counter.FlopCounterMode`, which counts every matmul, convolution and
attention product the step really does (frozen encoders included).

MFU = achieved model FLOPs / (peak FLOPs of the devices). Peaks are the vendors' dense figures for
the precision trained in; a device not in `PEAK_TFLOPS` (every CPU: its peak depends on the core
count, clock and vector units) gets no MFU unless `train.peak_tflops` gives one.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense tensor-core peaks in TFLOP/s, (bf16, tf32); matched against the CUDA device name.
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (989.4, 494.7),
    "H100 SXM": (989.4, 494.7),
    "H100 NVL": (835.0, 417.5),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.4, 494.7),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10G": (70.0, 35.0),
}


def device_peak_flops(
    device: torch.device, precision: str, override_tflops: float | None = None
) -> float | None:
    """Peak FLOP/s of one device for `precision` ("bf16" / "fp32"), or None when unknown."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, tf32) in PEAK_TFLOPS.items():  # most specific names first
        if key in name:
            return (bf16 if precision == "bf16" else tf32) * 1e12
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory allocated by torch (GPU), or the process's peak resident set (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class FlopCount:
    """Count the FLOPs of what runs inside `with counter.measure():` (once; later calls are free)."""

    def __init__(self):
        self.total: int | None = None

    @contextlib.contextmanager
    def measure(self):
        if self.total is not None:
            yield
            return
        with FlopCounterMode(display=False) as counter:
            yield
        self.total = counter.get_total_flops()


class Throughput:
    """Samples and time between two `report()` calls; pause it around validation and checkpoints."""

    def __init__(
        self, samples_per_step: int, tokens_per_sample: int, world_size: int, peak_flops: float | None
    ):
        self.samples_per_step = samples_per_step  # over all ranks
        self.tokens_per_sample = tokens_per_sample
        self.world_size = world_size
        self.peak_flops = peak_flops  # of one device
        self.flops_per_sample: float | None = None
        self.steps, self.seconds = 0, 0.0
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def step(self) -> None:
        self.steps += 1

    def report(self) -> dict[str, float]:
        """Rates since the last report (the clock keeps running)."""
        running = self._started is not None
        self.stop()
        seconds = max(self.seconds, 1e-9)
        samples = self.steps * self.samples_per_step
        metrics = {
            "samples_per_s": samples / seconds,
            "tokens_per_s": samples * self.tokens_per_sample / seconds,
        }
        if self.flops_per_sample:
            achieved = self.flops_per_sample * samples / seconds
            metrics["tflops"] = achieved / 1e12
            if self.peak_flops:
                metrics["mfu"] = achieved / (self.peak_flops * self.world_size)
        self.steps, self.seconds = 0, 0.0
        if running:
            self.start()
        return metrics
