"""The GPU path in one command: training MFU, rollout frames/s and FP8 speedups on one GPU.

    python benchmarks/gpu_suite.py --out gpu-results                 # one H100/H200, ~8 minutes
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke           # the same code paths, tiny, CPU

Writes OUT/gpu_suite.json (every row, the environment, the exact command) and OUT/gpu_suite.md
(the tables). Three sections, each row `ok`, `skipped` (with the reason: e.g. a CUDA-only path on
the CPU smoke run) or `failed` (with the error; the suite goes on):

- training: the `h100-base` world model (VAE tokenizer, DiT-B, bf16, torch.compile, its ZeRO
  config) with the real DeepSpeed trainer on synthetic clips of its shape: after warm-up steps
  (compilation included), a timed window: samples/s, tokens/s, MFU against the device's dense
  bf16 peak (`worldforge.training.throughput.PEAK_TFLOPS`: NVIDIA's H100/H200 SXM datasheets,
  989.4 TFLOP/s dense BF16), peak memory; again with `model.grad_checkpointing`.
- rollout: the base model's KV-cached streaming rollout at 64x64 and 256x256 frames: denoising-loop
  and end-to-end frames/s (decode included), per-frame latency (median, p95 over repeats), eager
  and `torch.compile`d DiT (graph breaks counted), batch 1 (interactive) and 8 (throughput), and
  which SDPA backends were allowed for the dtype. CUDA graphs are not built (reported so).
- fp8: bf16 against torchao FP8 (dynamic activations + weights on sm89+) and modelopt FP8 on the
  same model and clips, through the real quantize stage: denoise frames/s and speedup over bf16,
  PSNR against the bf16 rollout, agent position error (and its change) against the simulator's
  state, and the layers kept in high precision with why. `--model PACKAGE` uses a trained model
  (random weights otherwise: speeds are real, quality numbers only compare precisions).

`--smoke` runs every section at tiny sizes on the CPU (in about a minute; the test suite runs it),
so the script cannot rot between GPU lendings; CUDA-only rows are `skipped` with the reason.
Targets on an H100/H200 (issue 18): training MFU >= 35%; end-to-end rollout >= 30 frames/s at
64x64 and >= 16 at 256x256, batch 1; torchao FP8 >= 1.3x denoise frames/s at <= 0.3 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import _dynamo as dynamo

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

import fp8 as fp8_bench
import train_throughput

from worldforge.compression.quantize.config import QuantizeConfig
from worldforge.config import load_config
from worldforge.data.samples import iter_episodes
from worldforge.evaluation.objects import position_errors, read_scene, truth_scored
from worldforge.models.config import ModelConfig, SamplerConfig
from worldforge.models.streaming import rollout
from worldforge.models.tokenizer_objective import psnr
from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import load_package, save_package
from worldforge.registry import resolve

CUDA_ONLY = "CUDA-only path; this run is on {device}"
TARGETS = {"mfu": 0.35, "e2e_fps_64": 30.0, "e2e_fps_256": 16.0, "fp8_speedup": 1.3, "fp8_db": 0.3}


def environment(device: torch.device) -> dict[str, Any]:
    """Device, driver, CUDA, torch and library versions: recorded with every number."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name in ("deepspeed", "torchao", "nvidia-modelopt", "worldforge"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = "not installed"
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
            info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except OSError:
            info["driver"] = "unknown"
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def row(section: str, name: str, status: str = "ok", reason: str = "", **values: Any) -> dict[str, Any]:
    return {"section": section, "name": name, "status": status, "reason": reason, **values}


DEADLINE = [float("inf")]  # time.monotonic() after which the remaining rows are skipped


def guarded(section: str, name: str, work) -> dict[str, Any]:
    """Run one measurement; a failure becomes a `failed` row with the error, and the suite goes on.
    Past the suite's time budget (--budget-minutes) the row is skipped, saying so."""
    if time.monotonic() > DEADLINE[0]:
        return row(section, name, "skipped", "the suite's time budget (--budget-minutes) was spent")
    try:
        return work()
    except Exception as error:  # noqa: BLE001 - any failure of one row is reported in the table
        traceback.print_exc()
        return row(section, name, "failed", f"{type(error).__name__}: {str(error)[:300]}")


# ---- training ----------------------------------------------------------------------------------
def training_rows(args, device: torch.device, folder: Path) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    if args.smoke:
        overrides = [
            "train.deepspeed=zero0", "train.precision=fp32", "train.compile=false", "train.batch_size=2",
            "train.device=cpu", "data.clip_frames=4", "model.depth=2", "model.width=64", "model.heads=2",
        ]  # fmt: skip
        preset, warmup, steps = "tiny", 2, 4
    else:
        overrides, preset, warmup, steps = [], "h100-base", args.warmup_steps, args.timed_steps
    rows = []
    for checkpointing in (False, True):
        name = f"{preset}{' + grad checkpointing' if checkpointing else ''}"

        def work(checkpointing=checkpointing, name=name):
            config = load_config(preset, [*overrides, f"model.grad_checkpointing={str(checkpointing).lower()}"])
            rates = train_throughput.measure(config, config.train.deepspeed, warmup, steps, folder)
            if cuda:
                peak = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
            else:
                peak = rates.get("peak_memory_mb", float("nan")) / 1024
            return row(
                "training", name,
                precision=rates["precision"], zero=rates["zero_stage"], compile=config.train.compile,
                parameters_m=round(rates["parameters_m"], 2), samples_per_s=rates["samples_per_s"],
                tokens_per_s=rates["tokens_per_s"], tflops=rates.get("tflops"), mfu=rates.get("mfu"),
                peak_memory_gib=peak, timed_steps=steps, warmup_steps=warmup,
            )  # fmt: skip

        rows.append(guarded("training", name, work))
    if not cuda:
        rows.append(row("training", "h100-base, bf16 + torch.compile", "skipped", CUDA_ONLY.format(device=device)))
    return rows


# ---- rollout -----------------------------------------------------------------------------------
def rollout_model(args, size: int, device: torch.device, dtype: torch.dtype) -> WorldModel:
    """The base model (tiny in the smoke run) at `size` x `size` frames, random weights."""
    config = load_config("tiny" if args.smoke else "h100-base", [f"tokenizer.frame_size=[{size},{size}]"])
    model_cfg = config.model if args.smoke else ModelConfig(**{**config.model.model_dump(), "preset": "base"})
    sampler = SamplerConfig(**{**config.sampler.model_dump(), "steps": args.rollout_steps})
    torch.manual_seed(0)
    model = WorldModel.from_config(config.tokenizer, model_cfg, config.objective, sampler)
    return model.to(device=device, dtype=dtype).eval()


def sdpa_backends(device: torch.device) -> str:
    if device.type != "cuda":
        return "math (CPU)"
    allowed = [
        name
        for name, enabled in (
            ("flash", torch.backends.cuda.flash_sdp_enabled()),
            ("cudnn", torch.backends.cuda.cudnn_sdp_enabled()),
            ("mem-efficient", torch.backends.cuda.mem_efficient_sdp_enabled()),
            ("math", torch.backends.cuda.math_sdp_enabled()),
        )
        if enabled
    ]
    return "SDPA " + "/".join(allowed)


def time_rollouts(model, frames, actions, context: int, horizon: int, repeats: int) -> dict[str, float]:
    def once(seed: int):
        generator = torch.Generator(frames.device).manual_seed(seed)
        result = rollout(model, frames[:, :context], actions, horizon, generator=generator)
        if frames.device.type == "cuda":
            torch.cuda.synchronize(frames.device)
        return result

    once(0)  # warm-up (and compilation)
    results = [once(seed) for seed in range(repeats)]
    batch = frames.shape[0]
    latency = sorted(r.total_seconds / horizon for r in results)  # per generated frame (all clips)
    return {
        "denoise_fps": statistics.median(batch * horizon / r.denoise_seconds for r in results),
        "e2e_fps": statistics.median(batch * horizon / r.total_seconds for r in results),
        "latency_ms_median": 1000 * statistics.median(latency),
        "latency_ms_p95": 1000 * latency[min(len(latency) - 1, round(0.95 * (len(latency) - 1)))],
    }


def graph_break_row(args, device: torch.device) -> dict[str, Any]:
    """Dynamo traces the DiT through a KV-cached rollout (no code generation: the `eager` backend),
    counting graph breaks; the compiled CUDA rows count them the same way."""
    model = rollout_model(args, 32, device, torch.float32)
    dynamo.reset()
    dynamo.utils.counters.clear()
    model.dit = torch.compile(model.dit, backend="eager")
    frames = torch.rand(1, 1 + args.horizon, 3, 32, 32) * 2 - 1
    actions = torch.randint(0, model.model_cfg.num_actions, (1, 1 + args.horizon))
    with torch.no_grad():
        rollout(model, frames[:, :1], actions, args.horizon)
    return row(
        "rollout", "graph breaks of the rollout step", dtype="float32", steps=model.sampler_cfg.steps,
        graph_breaks=sum(dynamo.utils.counters["graph_break"].values()),
        attention=f"{dynamo.utils.counters['stats']['unique_graphs']} graphs (cache lengths)",
    )  # fmt: skip


def rollout_rows(args, device: torch.device) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    sizes = (32, 64) if args.smoke else (64, 256)
    batches = (1, 2) if args.smoke else (1, 8)
    modes = ("eager", "compiled") if cuda else ("eager",)
    rows = []
    for size in sizes:
        for batch in batches:
            for mode in modes:
                name = f"{size}x{size} batch {batch} {mode}"

                def work(size=size, batch=batch, mode=mode, name=name):
                    model = rollout_model(args, size, device, dtype)
                    breaks = None
                    if mode == "compiled":
                        dynamo.reset()
                        dynamo.utils.counters.clear()
                        model.dit = torch.compile(model.dit, dynamic=True)  # one graph for every cache length
                    context, horizon = args.context, args.horizon
                    frames = torch.rand(batch, context + horizon, 3, size, size, device=device, dtype=dtype) * 2 - 1
                    actions = torch.randint(0, model.model_cfg.num_actions, (batch, context + horizon), device=device)
                    with torch.no_grad():
                        rates = time_rollouts(model, frames, actions, context, horizon, args.repeats)
                    if mode == "compiled":
                        breaks = sum(dynamo.utils.counters["graph_break"].values())
                    return row(
                        "rollout", name, dtype=str(dtype).removeprefix("torch."), steps=model.sampler_cfg.steps,
                        depth=model.model_cfg.depth, width=model.model_cfg.width, attention=sdpa_backends(device),
                        graph_breaks=breaks, **rates,
                    )  # fmt: skip

                rows.append(guarded("rollout", name, work))
    if not cuda:
        rows.append(row("rollout", "torch.compile of the DiT", "skipped", CUDA_ONLY.format(device=device)))
        rows.append(guarded("rollout", "graph breaks of the rollout step", lambda: graph_break_row(args, device)))
    rows.append(row("rollout", "CUDA graphs of the fixed-shape step", "skipped", "not built in worldforge yet"))
    return rows


# ---- fp8 ---------------------------------------------------------------------------------------
def agent_error(frames: torch.Tensor, episodes: list, context: int) -> float:
    """Mean agent position error (frame sides) of generated frames (B, horizon, 3, H, W) against
    the simulator's true positions of the same test episodes (`worldforge.evaluation.objects`)."""
    errors = []
    for clip, episode in zip(frames.float().cpu().numpy(), episodes):
        length = len(episode.frames)
        positions = episode.state.reshape(length, -1, 4)[..., :2].astype(np.float64)
        scene = read_scene(episode.frames, positions)
        truth = positions[context : context + len(clip)]
        scored = truth_scored(episode.frames[context : context + len(clip)], scene)
        error, _ = position_errors(clip, truth, scene, scored)
        errors.append(np.nanmean(error[:, 0]))
    return float(np.nanmean(errors))


def fp8_rows(args, device: torch.device, folder: Path) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.model is not None:  # a trained package: quality and agent error mean something
        model = load_package(resolve(args.model)).build("cpu")
        model.sampler_cfg = model.sampler_cfg.model_copy(update={"steps": args.rollout_steps})
        size = model.tokenizer_cfg.frame_size[0]
    else:
        size = 32 if args.smoke else 256
        model = fp8_bench.synthetic_model("tiny" if args.smoke else "base", size, args.rollout_steps)
    source = save_package(folder / "fp8-source", package_config(model), model)
    context, horizon, batch = 1, args.horizon, 2 if args.smoke else 8
    config = fp8_bench.data_config(size, None, max(16, context + horizon), batch, args.calibration_clips)
    from worldforge.data.shards import build_dataset

    dataset = build_dataset(config, folder / "fp8-data", track=False, progress=False).path
    frames, actions = fp8_bench.test_clips(dataset, batch, context + horizon, device)
    episodes = [e for e in iter_episodes(dataset, "test") if len(e) >= context + horizon][:batch]
    clips = fp8_bench.Workload(frames.to(dtype), actions, context, horizon, args.repeats)
    reference_row, reference = fp8_bench.measure(
        "bf16" if cuda else "fp32", "unquantized", model.to(device=device, dtype=dtype), clips, None
    )
    reference_agent = agent_error(reference, episodes, context)
    rows = [
        row(
            "fp8", reference_row.name, how=reference_row.how, denoise_fps=reference_row.denoise_fps,
            e2e_fps=reference_row.e2e_fps, speedup=1.0, psnr_vs_bf16=None, weights_mib=reference_row.weights_mib,
            agent_error=reference_agent,
        )
    ]  # fmt: skip
    fp8_capable = cuda and torch.cuda.get_device_capability(device) >= (8, 9)
    if not fp8_capable:
        reason = "FP8 dynamic activations (torch._scaled_mm) need CUDA sm89+; " + CUDA_ONLY.format(device=device)
        rows.append(row("fp8", "torchao fp8_dynamic", "skipped", reason))
    for backend in ("torchao", "modelopt"):  # torchao's auto recipe: dynamic on sm89+, weight-only elsewhere

        def work(backend=backend):
            qcfg = QuantizeConfig(
                backend=backend, calibration_clips=args.calibration_clips, device=str(device), compile=cuda
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantized, how = fp8_bench.quantized(Path(source), qcfg, config, dataset, folder, dtype)
            measured, frames_out = fp8_bench.measure(backend, how, quantized, clips, reference)
            kept = _kept_layers(folder / f"fp8-{backend}")
            return row(
                "fp8", backend, how=how, denoise_fps=measured.denoise_fps, e2e_fps=measured.e2e_fps,
                speedup=measured.denoise_fps / reference_row.denoise_fps,
                psnr_vs_bf16=float(psnr(frames_out.float(), reference.float())),
                psnr_drop_db=reference_row.psnr - measured.psnr, weights_mib=measured.weights_mib, kept=kept,
                agent_error=(agent := agent_error(frames_out, episodes, context)),
                agent_error_change=agent / reference_agent - 1 if reference_agent else None,
            )  # fmt: skip

        rows.append(guarded("fp8", backend, work))
    return rows


def _kept_layers(package: Path) -> str:
    """The layers the quantized package keeps in high precision, and why (config.json's record)."""
    record = json.loads((package / "config.json").read_text()).get("quantization", {})
    excluded = record.get("excluded_layers", [])
    patterns = record.get("exclude", [])
    return f"{len(excluded)} kept (patterns {', '.join(patterns)}; or a dimension not a multiple of 16)"


# ---- output ------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


COLUMNS = {
    "training": ("name", "status", "precision", "zero", "compile", "parameters_m", "samples_per_s", "tokens_per_s",
                 "tflops", "mfu", "peak_memory_gib", "reason"),
    "rollout": ("name", "status", "dtype", "steps", "denoise_fps", "e2e_fps", "latency_ms_median", "latency_ms_p95",
                "graph_breaks", "attention", "reason"),
    "fp8": ("name", "status", "how", "denoise_fps", "e2e_fps", "speedup", "psnr_vs_bf16", "psnr_drop_db",
            "agent_error", "agent_error_change", "kept", "reason"),
}  # fmt: skip


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = [
        f"# GPU suite: {env.get('device_name')} ({env['device']})",
        "",
        (
            f"torch {env['torch']}, CUDA {env.get('cuda', '-')}, driver {env.get('driver', '-')}, deepspeed "
            f"{env['deepspeed']}, torchao {env['torchao']}, modelopt {env['nvidia-modelopt']}; {env['time']}"
        ),
        "",
        f"    {env['command']}",
    ]
    for section, columns in COLUMNS.items():
        lines += ["", f"## {section}", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for entry in (r for r in rows if r["section"] == section):
            cells = [fmt(entry.get(c)) if c != "mfu" or entry.get(c) is None else f"{entry[c]:.1%}" for c in columns]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the code paths, not the numbers")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --smoke)")
    parser.add_argument("--sections", default="training,rollout,fp8")
    parser.add_argument("--warmup-steps", type=int, default=10, help="training: untimed steps (compilation)")
    parser.add_argument("--timed-steps", type=int, default=30, help="training: timed steps")
    parser.add_argument("--rollout-steps", type=int, default=4, help="sampler steps of the rollouts")
    parser.add_argument("--context", type=int, default=1)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration-clips", type=int, default=16)
    parser.add_argument(
        "--budget-minutes", type=float, default=8.0, help="rows not started by then are skipped (reported)"
    )
    parser.add_argument(
        "--model", default=None, help="fp8: a trained package (folder or models:/ URI) instead of random weights"
    )
    args = parser.parse_args()
    if args.smoke:
        args.timed_steps, args.horizon, args.repeats, args.calibration_clips = 4, 4, 3, 4
        args.rollout_steps = min(args.rollout_steps, 2)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    env = environment(device)
    started = time.perf_counter()
    DEADLINE[0] = time.monotonic() + 60 * args.budget_minutes
    rows: list[dict[str, Any]] = []
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="worldforge-gpu-suite-") as scratch:
        folder = Path(scratch)
        if "training" in sections:
            rows += training_rows(args, device, folder)
        if "rollout" in sections:
            rows += rollout_rows(args, device)
        if "fp8" in sections:
            rows += guarded_section("fp8", lambda: fp8_rows(args, device, folder))
    env["seconds"] = time.perf_counter() - started
    (args.out / "gpu_suite.json").write_text(json.dumps({"environment": env, "targets": TARGETS, "rows": rows}, indent=2, default=str))
    table = markdown(rows, env)
    (args.out / "gpu_suite.md").write_text(table)
    print(table)
    print(f"{len(rows)} rows in {env['seconds']:.0f} s -> {args.out}/gpu_suite.json, gpu_suite.md")
    if any(r["status"] == "failed" for r in rows):
        raise SystemExit(1)


def guarded_section(section: str, work) -> list[dict[str, Any]]:
    try:
        return work()
    except Exception as error:  # noqa: BLE001 - reported as a failed row
        traceback.print_exc()
        return [row(section, section, "failed", f"{type(error).__name__}: {str(error)[:300]}")]


if __name__ == "__main__":
    main()
