"""Where a generated frame's time goes on this machine: one frame of a batch-1 KV-cached rollout
(the play page's case), split by the DiT's parts, with the FLOPs of each.

For each model (the quickstart's architecture untrained, and the same with fewer blocks), times
`LatentStream.next` (all solver steps + committing the previous frame) over many frames, with the
frame committed in the first solver step's DiT call (fused, what a rollout does) and in a call of
its own before it (separate: the baseline, measured in the same run), and the wall time inside
each top-level part of the DiT (conv stem, timestep and action embeddings, each transformer
block, final layer) by forward hooks; what is left is the conv head, the solver, the anchors, the
warp and Python. Prints the median over --repeats runs of the time per frame, and the parts of
the run that median comes from (each part's share of that run's time, so that they add up to it).

    python benchmarks/frame_time.py --threads 2 --depth 4 2 --steps 1 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

import torch

from worldforge.config import load_config
from worldforge.models.flops import rollout_flops
from worldforge.models.streaming import LatentStream
from worldforge.models.world_model import WorldModel


def parts(model: WorldModel) -> dict[str, torch.nn.Module]:
    dit = model.dit
    named = {"conv stem + patchify": dit.patch_embed, "timestep embed": dit.t_embed, "action embed": dit.action_embed}
    for index, block in enumerate(dit.blocks):
        named[f"block {index}"] = block
    named["final layer"] = dit.final  # its conv head runs after it (WorldDiT._output): in "rest"
    return named


def time_frames(model: WorldModel, steps: int, frames: int, separate: bool) -> tuple[float, dict[str, float]]:
    """Median seconds per frame of `frames` frames, and each part's share of their whole time;
    separate: commit each frame in a DiT call of its own instead of in the next frame's first."""
    spent: dict[str, float] = defaultdict(float)
    handles = []
    for name, module in parts(model).items():
        def before(_module, _inputs, name=name):
            spent[f"_start_{name}"] = time.perf_counter()

        def after(_module, _inputs, _output, name=name):
            spent[name] += time.perf_counter() - spent.pop(f"_start_{name}")

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    size = model.tokenizer_cfg.frame_size
    context = torch.zeros(1, 4, model.tokenizer_cfg.latent_dim, *size)
    condition = model.action_condition(torch.zeros(1, 4 + frames, dtype=torch.long), 4 + frames)
    with torch.no_grad():
        stream = LatentStream(model, context, condition[:, :4], torch.Generator().manual_seed(0))
        for index in range(4, 8):  # warm-up, and a full cache window
            stream.next(condition[:, index : index + 1], steps)
        spent.clear()
        per_frame = []
        for index in range(8, frames):
            start = time.perf_counter()
            if separate:
                stream.commit()
            stream.next(condition[:, index : index + 1], steps)
            per_frame.append(time.perf_counter() - start)
    for handle in handles:
        handle.remove()
    whole = sum(per_frame)
    return statistics.median(per_frame), {k: v / whole for k, v in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--depth", type=int, nargs="+", default=[4, 2], help="DiT blocks of each model timed")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="sampler steps per frame")
    parser.add_argument("--frames", type=int, default=72, help="frames per timed rollout (8 warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    rows = []
    for depth in args.depth:
        model_cfg = config.model.model_copy(update={"depth": depth})
        model = WorldModel(config.tokenizer, model_cfg, config.objective, config.sampler).eval()
        for steps in args.steps:
            runs = {False: [], True: []}
            for _ in range(args.repeats):  # the two ways take turns, so the machine's load hits both
                for separate, timed in runs.items():
                    timed.append(time_frames(model, steps, args.frames, separate))
            flops = rollout_flops(model, steps=steps)["total"]
            for separate, timed in runs.items():
                total, shares = sorted(timed, key=lambda run: run[0])[(len(timed) - 1) // 2]  # the median run
                rows.append((depth, steps, "separate" if separate else "fused", total, shares, flops))
    base = rows[0][3]
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 1, {args.config} architecture, the median of "
          f"{args.repeats} rollouts of {args.frames - 8} frames (the parts: that rollout's shares of its time)")
    print("| blocks | steps | commit | ms/frame | vs first | MFLOPs/frame | stem | embeds | blocks | final layer | rest |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for depth, steps, commit, total, shares, flops in rows:
        columns = {
            "stem": shares["conv stem + patchify"],
            "embeds": shares["timestep embed"] + shares["action embed"],
            "blocks": sum(v for k, v in shares.items() if k.startswith("block")),
            "final": shares["final layer"],
        }
        columns["rest"] = 1.0 - sum(columns.values())
        cells = [f"{1e3 * share * total:.2f} ({share:.0%})" for share in columns.values()]
        print(f"| {depth} | {steps} | {commit} | {1e3 * total:.2f} | {total / base:.2f}x | {flops / 1e6:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
