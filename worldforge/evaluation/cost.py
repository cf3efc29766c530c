"""What a model costs to run, on the current device: parameters, FLOPs, throughput, latency, memory.

Speed is measured on batch-1 rollouts of the first held-out clip (one warm-up, then
`latency_repeats` timed runs; models compared in one evaluation take turns run by run), as a user
streaming one world would see it:
- `fps_denoise`: generated frames per second of the denoising loop alone (the DiT);
- `fps_e2e`: frames per second end to end (encode context + denoise + decode);
- `latency_ms_median`, `latency_ms_p95`: end-to-end milliseconds per generated frame, over the runs;
- `fps_denoise_spread`, `fps_e2e_spread`: how much the runs disagreed, half the range of their
  frames/s over the median's (0.03: the runs lay within about 3% either side; 0 from one run).
Both fps use the median run; the promotion gate reads the spreads as the measurement's noise, so
that a candidate within noise of the champion is not judged on a coin toss of the machine's load.
FLOPs are counted on the meta device (`worldforge.models.flops`): the cost that does not vary.

Peak memory: on CUDA, the allocator's peak during the timed runs (`torch.cuda.max_memory_allocated`,
weights included). On CPU there is no allocator counter, so it is the model's weight bytes plus
the growth of the process's resident memory over one more run, sampled every millisecond: an
approximation, recorded as such in `memory_measure`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from typing_extensions import Self

from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.rollout_eval import EvalClips
from worldforge.models.flops import count_parameters, rollout_flops
from worldforge.models.streaming import rollout

MB = 2**20


class PeakMemory:
    """Peak memory of the code inside `with`, in bytes (`.peak`); see the module docstring."""

    def __init__(self, device: torch.device, resident_bytes: int):
        self.device = device
        self.resident_bytes = resident_bytes  # weights: already allocated before the timed runs
        self.peak = 0
        self.measure = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_weights_plus_rss_growth"

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil

        self._process = psutil.Process()
        self._start = self._highest = self._process.memory_info().rss
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._highest = max(self._highest, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._sampler.join()
        self._highest = max(self._highest, self._process.memory_info().rss)
        self.peak = self.resident_bytes + self._highest - self._start


def model_bytes(model: torch.nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def measure_cost(model, clips: EvalClips, config: EvalConfig, device: torch.device) -> dict[str, Any]:
    """Cost of `model` (already on `device`) generating `clips.horizon` frames after the first
    clip's context, batch 1."""
    return measure_costs([model], clips, config, device, [config.denoise_steps])[0]


def measure_costs(
    models: list, clips: EvalClips, config: EvalConfig, device: torch.device, steps: list[int | None]
) -> list[dict[str, Any]]:
    """`measure_cost` of several models (each sampled with its `steps`, None: its own sampler's),
    timed in interleaved rounds (round r runs every model once), so that a change in the machine's
    load during the measurement hits every model alike and their ratio stays fair. Peak memory is
    measured in one more run per model, apart from the timed ones: on CPU its sampling thread
    would otherwise compete with the rollout for the cores."""
    steps = [chosen or model.sampler_cfg.steps for model, chosen in zip(models, steps, strict=True)]
    context, actions = clips.context[:1].to(device), clips.actions[:1].to(device)

    def run(index: int):
        generator = torch.Generator(device).manual_seed(config.seed)
        return rollout(models[index], context, actions, clips.horizon, steps=steps[index], generator=generator)

    for index in range(len(models)):
        run(index)  # warm-up: first-call allocations and kernel selection are not what a stream pays
    denoise: list[list[float]] = [[] for _ in models]
    total: list[list[float]] = [[] for _ in models]
    for _ in range(config.latency_repeats):
        for index in range(len(models)):
            result = run(index)
            denoise[index].append(result.denoise_seconds)
            total[index].append(result.total_seconds)
    costs = []
    for index, model in enumerate(models):
        with PeakMemory(device, model_bytes(model)) as memory:
            run(index)
        flops = rollout_flops(model, steps=steps[index])
        per_frame_ms = np.asarray(total[index]) * 1000.0 / clips.horizon
        costs.append(
            {
                "parameters": count_parameters(model),
                "parameters_dit": count_parameters(model.dit),
                "flops_per_frame": flops["total"],
                "flops_per_frame_denoise": flops["denoise"],
                "fps_denoise": clips.horizon / float(np.median(denoise[index])),
                "fps_e2e": clips.horizon / float(np.median(total[index])),
                "fps_denoise_spread": relative_spread(denoise[index]),
                "fps_e2e_spread": relative_spread(total[index]),
                "latency_ms_median": float(np.median(per_frame_ms)),
                "latency_ms_p95": float(np.percentile(per_frame_ms, 95)),
                "peak_memory_mb": memory.peak / MB,
                "memory_measure": memory.measure,
                "denoise_steps": steps[index],
                "device": str(device) if device.type == "cpu" else _gpu_name(device),
            }
        )
    return costs


def relative_spread(seconds: list[float]) -> float:
    """Half the range of the runs' rates (1 / seconds) over their median rate: the runs' noise as
    a fraction of the median's speed, 0 for a single run."""
    rates = 1.0 / np.asarray(seconds, dtype=np.float64)
    return float((rates.max() - rates.min()) / (2.0 * np.median(rates)))


def _gpu_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})"
