"""Training-step time of a preset's world model with the conv stem and head in channels-last
layout (what `models/dit.py` uses) against the default contiguous layout, in one run.

    python benchmarks/conv_layout.py quickstart --repeats 5 --steps 30

The two layouts alternate, `--repeats` rounds of `--steps` timed optimizer steps each (forward,
backward, AdamW) on the same synthetic batch; prints the median ms per step of each and their
ratio. Needs a preset with `model.stem: conv`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from worldforge.config import load_config
from worldforge.models import dit
from worldforge.models.objective import flow_matching_loss
from worldforge.models.world_model import WorldModel

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset", nargs="?", default="quickstart")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.preset)
    if config.model.stem != "conv":
        raise SystemExit(
            f"{args.preset}: model.stem is {config.model.stem!r}; this benchmark times the conv stem"
        )
    torch.manual_seed(0)
    model = WorldModel(config.tokenizer, config.model, config.objective, config.sampler).train()
    optimizer = torch.optim.AdamW(model.dit.parameters(), lr=config.train.lr)
    b, t = config.train.batch_size, config.data.clip_frames
    h, w = config.tokenizer.frame_size
    frames = torch.rand(b, t, config.tokenizer.frame_channels, h, w) * 2 - 1
    actions = torch.randint(0, config.model.num_actions, (b, t))

    def timed(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss, _ = flow_matching_loss(model, frames, actions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps * 1000

    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for _ in range(args.repeats):
        for name, layout in LAYOUTS.items():
            dit.CONV_LAYOUT = layout
            timed(3)  # warm up this layout's kernels
            times[name].append(timed(args.steps))
    dit.CONV_LAYOUT = torch.channels_last
    base = statistics.median(times["contiguous"])
    print(
        f"{args.preset}: batch {b} x {t} frames of {h}x{w}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} x {args.steps} steps"
    )
    print("| conv layout | ms / step | speedup |")
    print("| --- | --- | --- |")
    for name in LAYOUTS:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.1f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
