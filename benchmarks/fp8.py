"""FP8 vs bf16: rollout speed, memory and quality of one model, quantized by each backend, in one run.

    python benchmarks/fp8.py --preset base --device cuda --frame-size 256 --batch 8
    python benchmarks/fp8.py --preset tiny --device cpu --threads 1 --steps 4 --horizon 4

For the chosen preset (a model preset tiny/small/base/large or a config preset / YAML) and
device, the model runs unquantized in `--dtype` (bf16 by default), then quantized by each
backend through the real stage (`quantize_package`: modelopt calibrated on the dataset's train
clips, torchao with its `auto` recipe) and reloaded from its package into the same dtype. Every
variant rolls out the same test clips from the same noise; the table gives medians over
`--repeats`:

  denoise fps   generated frames per second of the denoising loop (DiT prefill, solver steps,
                cache commits), all clips of the batch counted
  e2e fps       the same, end to end (encode context + denoise + decode)
  peak MiB      CUDA peak allocated memory during the rollouts (n/a on CPU)
  weights MiB   bytes of the model's parameters and buffers (FP8 weights count one byte)
  PSNR          dB against the ground-truth frames; `vs ref` against the unquantized rollout

Without `--model`, the preset's weights are random (with the zero-initialised AdaLN and output
layers filled in, so that every layer matters): speeds are real, PSNR against ground truth is
not meaningful, only its change between precisions is. Without `--dataset`, a small simulator
dataset at the model's frame size is built in a temporary folder. The issue's target, on an H100
with `base`: >= 1.3x denoise fps over bf16 at <= 0.3 dB PSNR loss.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldforge.compression.quantize.config import QuantizeConfig
from worldforge.compression.quantize.stage import quantize_package
from worldforge.config import WorldforgeConfig, load_config
from worldforge.core.runtime import select_device
from worldforge.data.samples import iter_episodes
from worldforge.models.config import PRESETS, ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.models.quantized import QuantizationFallbackWarning, read_record, restore_quantization
from worldforge.models.quantized.execution import plan_execution
from worldforge.models.streaming import rollout
from worldforge.models.tokenizer_objective import psnr
from worldforge.models.world_model import WorldModel, build_world_model, package_config
from worldforge.packages import load_package, save_package
from worldforge.registry import resolve


@dataclass
class Workload:
    """The same rollouts for every variant: test clips, how much context, how many frames."""

    frames: torch.Tensor  # (B, context + horizon, 3, H, W) in [-1, 1], in the model dtype
    actions: torch.Tensor  # (B, context + horizon[, A])
    context: int
    horizon: int
    repeats: int


@dataclass
class Row:
    name: str
    how: str
    denoise_fps: float
    e2e_fps: float
    peak_mib: float | None
    weights_mib: float
    psnr: float
    psnr_vs_ref: float | None


def synthetic_model(preset: str, frame_size: int | None, steps: int | None) -> WorldModel:
    """The preset with random weights in every layer (a fresh DiT's AdaLN and output are zeros)."""
    if preset in PRESETS:
        size = (frame_size, frame_size) if frame_size else TokenizerConfig().frame_size
        tokenizer, model, objective, sampler = (
            TokenizerConfig(frame_size=size),
            ModelConfig(preset=preset),
            ObjectiveConfig(),
            SamplerConfig(),
        )
    else:
        config = load_config(preset)
        tokenizer, model, objective, sampler = config.tokenizer, config.model, config.objective, config.sampler
    if steps:
        sampler = sampler.model_copy(update={"steps": steps})
    torch.manual_seed(0)
    world = WorldModel.from_config(tokenizer, model, objective, sampler)
    with torch.no_grad():
        for parameter in world.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.02)
    return world.eval()


def data_config(size: int, dataset: Path | None, frames: int, test_episodes: int, calibration_clips: int):
    """The `data` section of the calibration clips, and of the dataset built when there is none:
    half train, half test, with enough of each for the calibration and the test batch."""
    if dataset is not None:
        from worldforge.data.manifest import read_manifest

        frames = read_manifest(dataset).window_frames
    clip = min(8, frames)
    clips_per_episode = (frames - clip) // 4 + 1
    half = max(test_episodes, -(-calibration_clips // clips_per_episode), 12)
    return load_config(None, [
        f"data.resolution={size}", f"data.episodes={2 * half}", "data.splits={train: 0.5, test: 0.5}",
        f"data.episode_frames={frames}", f"data.window_frames={frames}", f"data.clip_frames={clip}",
        "data.clip_stride=4", "data.loader.batch_size=4",
    ])  # fmt: skip


def test_clips(dataset: Path, batch: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `length` frames of `batch` test episodes: frames (B, T, 3, H, W) in [-1, 1], actions."""
    frames, actions = [], []
    for episode in iter_episodes(dataset, "test"):
        if len(episode) >= length:
            frames.append(episode.frames[:length])
            actions.append(episode.actions[:length])
        if len(frames) == batch:
            break
    if len(frames) < batch:
        raise SystemExit(f"{dataset}: fewer than {batch} test episodes of >= {length} frames; lower --batch")
    video = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (B, T, 3, H, W)
    return video.to(device), torch.from_numpy(np.stack(actions)).to(device)


def weight_bytes(model: torch.nn.Module) -> int:
    """Parameter and buffer bytes; torchao FP8 tensors count their FP8 data and scales."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if hasattr(tensor, "qdata"):
            total += tensor.qdata.nbytes + tensor.scale.nbytes
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def measure(
    name: str, how: str, model, work: Workload, reference: torch.Tensor | None
) -> tuple[Row, torch.Tensor]:
    """A warm-up rollout (torch.compile compiles here), then `work.repeats` timed ones, same noise."""
    device, batch = work.frames.device, work.frames.shape[0]
    context = work.frames[:, : work.context]

    def generate():
        return rollout(
            model, context, work.actions, work.horizon, generator=torch.Generator(device).manual_seed(0)
        )

    generate()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results = [generate() for _ in range(work.repeats)]
    frames = results[0].frames.float()  # (B, horizon, 3, H, W)
    target = work.frames[:, work.context :].float()
    row = Row(
        name=name,
        how=how,
        denoise_fps=statistics.median(batch * work.horizon / r.denoise_seconds for r in results),
        e2e_fps=statistics.median(batch * work.horizon / r.total_seconds for r in results),
        peak_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        weights_mib=weight_bytes(model) / 2**20,
        psnr=float(psnr(frames, target)),
        psnr_vs_ref=None if reference is None else float(psnr(frames, reference)),
    )
    return row, frames


def quantized(
    source: Path,
    qcfg: QuantizeConfig,
    config: WorldforgeConfig,
    dataset: Path,
    scratch: Path,
    dtype: torch.dtype,
) -> tuple[torch.nn.Module, str]:
    """Quantize `source` through the stage, then reload the package into `dtype` on `qcfg.device`
    (cast before the quantization is restored, as per-row FP8 needs). Returns it and how it runs."""
    device = torch.device(qcfg.device)
    path = quantize_package(source, config, qcfg, dataset, scratch / f"fp8-{qcfg.backend}", track=False)
    package = load_package(path)
    model = build_world_model(package.config)
    model.load_state_dict(package.state)
    model = model.to(device=device, dtype=dtype).eval()
    record = read_record(package.config, package.path)
    execution = plan_execution(record.backend, record.recipe, record.granularity, device, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationFallbackWarning)  # summarised in the `how` column
        model = restore_quantization(model, package.config, package.path)
    how = (
        f"{execution.recipe} {execution.granularity}, {'FP8' if execution.fp8_matmuls else 'no FP8'} matmuls"
    )
    if execution.fallback:
        same = (execution.recipe, execution.granularity) == (record.recipe, record.granularity)
        how += " (simulated)" if same else f" (fallback from {record.recipe} {record.granularity})"
    return model, how


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'variant':<9} | {'denoise fps':>11} | {'speedup':>7} | {'e2e fps':>8} | {'peak MiB':>8} | "
        f"{'weights MiB':>11} | {'PSNR dB':>7} | {'dPSNR':>6} | {'vs ref dB':>9} | how"
    )
    print(header)
    print("-" * len(header))
    base = rows[0]
    for row in rows:
        peak = f"{row.peak_mib:8.0f}" if row.peak_mib is not None else f"{'n/a':>8}"
        vs_ref = f"{row.psnr_vs_ref:9.2f}" if row.psnr_vs_ref is not None else f"{'-':>9}"
        print(
            f"{row.name:<9} | {row.denoise_fps:11.2f} | {row.denoise_fps / base.denoise_fps:7.2f} | "
            f"{row.e2e_fps:8.2f} | {peak} | {row.weights_mib:11.1f} | {row.psnr:7.2f} | "
            f"{row.psnr - base.psnr:+6.2f} | {vs_ref} | {row.how}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", default="tiny", help="model preset (tiny/small/base/large) or config preset / YAML"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="a trained package, instead of random weights"
    )
    parser.add_argument(
        "--dataset", type=Path, default=None, help="dataset (train + test) at the model's frame size"
    )
    parser.add_argument(
        "--frame-size", type=int, default=None, help="model presets: square frames (default 64)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--backends", default="modelopt,torchao")
    parser.add_argument("--batch", type=int, default=4, help="test clips rolled out together")
    parser.add_argument("--context", type=int, default=1, help="context frames")
    parser.add_argument("--horizon", type=int, default=8, help="frames generated per rollout")
    parser.add_argument("--steps", type=int, default=None, help="solver steps (default: the sampler config)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-clips", type=int, default=16)
    parser.add_argument(
        "--no-compile", action="store_true", help="torchao: no torch.compile of the FP8 layers"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads (torch.set_num_threads)"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = select_device(args.device), getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        if args.model is not None:
            source, model = args.model, load_package(resolve(args.model)).build("cpu")
        else:
            model = synthetic_model(args.preset, args.frame_size, args.steps)
            source = save_package(scratch / "source", package_config(model), model)
        height, width = model.tokenizer_cfg.frame_size
        if height != width and args.dataset is None:
            raise SystemExit(
                f"frames are {height}x{width}; the simulator records square frames: pass --dataset"
            )
        length = args.context + args.horizon
        config = data_config(height, args.dataset, max(16, length), args.batch, args.calibration_clips)
        dataset = args.dataset
        if dataset is None:
            from worldforge.data.shards import build_dataset

            dataset = build_dataset(config, scratch / "sim", track=False, progress=False).path
        frames, actions = test_clips(dataset, args.batch, length, device)
        work = Workload(frames.to(dtype), actions, args.context, args.horizon, args.repeats)
        steps = args.steps or model.sampler_cfg.steps
        hardware = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{torch.get_num_threads()} threads"
        )
        print(
            f"preset {args.preset} | {f'package {args.model}' if args.model else 'random weights'} | "
            f"{device} ({hardware}) | {args.dtype} | DiT depth {model.model_cfg.depth} width "
            f"{model.model_cfg.width} | {height}x{width} frames | batch {args.batch} | "
            f"context {args.context} | horizon {args.horizon} | {model.sampler_cfg.solver} {steps} steps | "
            f"median of {args.repeats}"
        )

        def with_steps(m):
            if args.steps:
                m.sampler_cfg = m.sampler_cfg.model_copy(update={"steps": args.steps})
            return m

        name = {"bfloat16": "bf16", "float32": "fp32"}[args.dtype]
        row, reference = measure(
            name, "unquantized", with_steps(model.to(device=device, dtype=dtype)), work, None
        )
        rows = [row]
        del model
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            qcfg = QuantizeConfig(
                backend=backend,
                calibration_clips=args.calibration_clips,
                device=str(device),
                compile=not args.no_compile,
            )
            fp8, how = quantized(Path(source), qcfg, config, dataset, scratch, dtype)
            rows.append(measure(backend, how, with_steps(fp8), work, reference)[0])
            del fp8
        print_table(rows)


if __name__ == "__main__":
    main()
