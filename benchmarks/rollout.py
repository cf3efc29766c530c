"""Rollout speed: KV-cached generation vs recomputing the context from scratch at every step.

    python benchmarks/rollout.py --preset tiny --device cpu --repeats 5

For each context length, both modes generate the same `--horizon` frames from the same noise
(randomly initialised weights: speed does not depend on them) and the table reports the median
over repeats of end-to-end frames/s (encode + denoise + decode) and of denoising time per frame,
with the ratio cached / recompute. A preset is a model preset (tiny, small, base, large) or a
config preset / YAML whose tokenizer, model and sampler sections are used.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from worldforge.core.runtime import select_device
from worldforge.models.config import PRESETS, ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.models.flops import count_parameters
from worldforge.models.streaming import rollout
from worldforge.models.world_model import WorldModel


def build(preset: str, steps: int | None) -> WorldModel:
    if preset in PRESETS:
        tokenizer, model, objective = TokenizerConfig(), ModelConfig(preset=preset), ObjectiveConfig()
        sampler = SamplerConfig()
    else:
        from worldforge.config import load_config

        config = load_config(preset)
        tokenizer, model, objective, sampler = config.tokenizer, config.model, config.objective, config.sampler
    if steps:
        sampler = sampler.model_copy(update={"steps": steps})
    return WorldModel.from_config(tokenizer, model, objective, sampler)


def measure(
    model, frames, actions, context: int, horizon: int, use_cache: bool, repeats: int
) -> tuple[float, float]:
    """Median end-to-end frames/s and median denoising seconds per frame."""
    rollout(model, frames[:, :context], actions, horizon, use_cache=use_cache)  # warm-up
    fps, denoise = [], []
    for repeat in range(repeats):
        generator = torch.Generator(frames.device).manual_seed(repeat)
        result = rollout(
            model, frames[:, :context], actions, horizon, use_cache=use_cache, generator=generator
        )
        fps.append(horizon / result.total_seconds)
        denoise.append(result.denoise_seconds / horizon)
    return statistics.median(fps), statistics.median(denoise)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=8, help="frames generated per rollout")
    parser.add_argument(
        "--context-lengths", default=None, help="comma-separated; default 1, W/2, W-1 for window W"
    )
    parser.add_argument("--steps", type=int, default=None, help="solver steps (default: the sampler config)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = select_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = build(args.preset, args.steps).to(device=device, dtype=dtype).eval()
    window = model.model_cfg.context_window
    r = model.frames_per_latent
    if args.context_lengths:
        contexts = [int(c) for c in args.context_lengths.split(",")]
    else:
        contexts = sorted({1, max(1, window // 2), max(1, window - 1)})
    contexts = [1 + (c - 1) * r for c in contexts]  # whole latent frames of context
    height, width = model.tokenizer_cfg.frame_size
    total = max(contexts) + args.horizon
    frames = torch.rand(args.batch, total, model.tokenizer_cfg.frame_channels, height, width, device=device)
    frames = (frames * 2 - 1).to(dtype)
    if model.model_cfg.action_space == "discrete":
        actions = torch.randint(0, model.model_cfg.num_actions, (args.batch, total), device=device)
    else:
        actions = torch.randn(args.batch, total, model.model_cfg.action_dim, device=device)

    sampler = model.sampler_cfg
    print(
        f"preset {args.preset} | device {device} ({torch.get_num_threads()} threads) | {args.dtype} | "
        f"DiT {count_parameters(model.dit) / 1e6:.2f}M params, tokenizer {model.tokenizer_cfg.kind} | "
        f"{height}x{width} frames | window {window} latent frames | {sampler.solver} {sampler.steps} steps | "
        f"batch {args.batch} | horizon {args.horizon} | median of {args.repeats}"
    )
    header = f"{'context':>7} | {'cached fps':>10} | {'recompute fps':>13} | {'ratio':>5} | {'cached denoise ms/frame':>23} | {'recompute denoise ms/frame':>26}"
    print(header)
    print("-" * len(header))
    for context in contexts:
        cached_fps, cached_denoise = measure(
            model, frames, actions, context, args.horizon, True, args.repeats
        )
        full_fps, full_denoise = measure(model, frames, actions, context, args.horizon, False, args.repeats)
        print(
            f"{context:>7} | {cached_fps:>10.1f} | {full_fps:>13.1f} | {cached_fps / full_fps:>5.2f} | "
            f"{cached_denoise * 1e3:>23.1f} | {full_denoise * 1e3:>26.1f}"
        )


if __name__ == "__main__":
    main()
