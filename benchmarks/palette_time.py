"""What the palette costs a generated frame: batch-1 KV-cached rollouts (the play page's case) of
trained world-model packages from held-out contexts, with the sampler's palette off, on
(`sampler.palette`), on with capped colour counts (`sampler.palette_counts`), with the still
background too (`sampler.palette_background`) and with sprites too (`sampler.palette_sprites`).

For each package, each variant rolls out the same --frames frames after the same context, from
the same noise, --repeats times (one warm-up first); the table gives the median milliseconds per
frame (encode + denoise + palette + decode) and its ratio against the palette off, measured in
the same run; the median milliseconds a frame spends in the palette step itself
(`streaming.in_palette`: on a busy machine the whole frame's time swings by more than that step
takes, so it is timed on its own too); and how many of the capped frames had a colour over its cap
(the frames that pay for the ranking).

    python benchmarks/palette_time.py PACKAGE [PACKAGE ...] --dataset DATASET --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.long_play import load_play
from worldforge.models import palette as palette_module
from worldforge.models import streaming
from worldforge.models.streaming import rollout
from worldforge.packages import load_package

VARIANTS = {
    "palette off": {"palette": False, "palette_counts": 0.0},
    "palette": {"palette": True, "palette_counts": 0.0},
    "palette, counts capped (1.0)": {"palette": True, "palette_counts": 1.0},
    "capped, still background (0.15)": {"palette": True, "palette_counts": 1.0, "palette_background": 0.15},
    "capped, still background, sprites": {
        "palette": True,
        "palette_counts": 1.0,
        "palette_background": 0.15,
        "palette_sprites": True,
    },
}


def overflowing_frames(model, context, actions, frames: int) -> float:
    """The share of a capped rollout's frames in which some colour exceeded its cap."""
    seen = {"frames": 0, "over": 0}
    original = palette_module.capped_nearest

    def counting(distance, caps, passes=8):
        nearest = distance.argmin(dim=-1)
        counts = torch.zeros_like(caps).scatter_add_(1, nearest, torch.ones_like(nearest))
        seen["frames"] += distance.shape[0]
        seen["over"] += int((counts > caps).any(dim=1).sum())
        return original(distance, caps, passes)

    palette_module.capped_nearest = counting
    try:
        rollout(model, context, actions, frames, generator=torch.Generator().manual_seed(0))
    finally:
        palette_module.capped_nearest = original
    return seen["over"] / max(seen["frames"], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="+", help="world-model package directories")
    parser.add_argument("--dataset", required=True, help="the dataset whose test split gives the contexts")
    parser.add_argument("--frames", type=int, default=64, help="frames per timed rollout")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = load_play(args.dataset, EvalConfig(play_episodes=1, play_frames=args.frames))
    context, actions = clips.context[:1], clips.actions[:1]
    print(f"batch 1, {args.frames} frames per rollout, median of {args.repeats}, {args.threads} threads\n")
    print("| package | sampler | ms per frame | x palette off | palette step, ms per frame | frames over a cap |")
    print("| --- | --- | --- | --- | --- | --- |")
    step_times: list[float] = []
    original_step = streaming.in_palette

    def timed_step(*args):
        start = time.perf_counter()
        result = original_step(*args)
        step_times.append(time.perf_counter() - start)
        return result

    streaming.in_palette = timed_step
    for path in args.packages:
        package = load_package(path)
        base = None
        for name, update in VARIANTS.items():
            model = package.build("cpu")
            model.sampler_cfg = model.sampler_cfg.model_copy(update=update)
            rollout(model, context, actions, 8)  # warm-up
            times, steps = [], []
            for repeat in range(args.repeats):
                step_times.clear()
                start = time.perf_counter()
                rollout(model, context, actions, args.frames, generator=torch.Generator().manual_seed(repeat))
                times.append((time.perf_counter() - start) / args.frames * 1e3)
                steps.append(sum(step_times) / args.frames * 1e3)
            ms, step_ms = statistics.median(times), statistics.median(steps)
            base = base or ms
            over = overflowing_frames(model, context, actions, args.frames) if update["palette_counts"] else None
            shown = "-" if over is None else f"{over:.0%}"
            name_shown = path.rstrip("/").split("/")[-1]
            print(f"| {name_shown} | {name} | {ms:.2f} | {ms / base:.2f}x | {step_ms:.2f} | {shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
