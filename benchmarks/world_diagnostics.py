"""Why a world model's rollouts go wrong: which inputs carry its errors, and whether things move.

    python benchmarks/world_diagnostics.py --dataset ROOT/datasets/NAME PACKAGE [PACKAGE ...]

On the held-out clips of the evaluation (context 4, horizon 8 by default), for each model package:

1. **Teacher-forced against rolled out**, per horizon step: the ball and agent position error of a
   rollout, and of one-step predictions from the true frames before each step. A gap that opens
   with the horizon is compounding: the model's own frames, fed back, are worse inputs than the
   truth.
2. **Which input carries it**: the rollout again (one sampling step, no KV cache) with the DiT's
   attention context and the stacked previous frames (the anchors, `model.stack_previous`; the
   residual's base) each taken from the truth or from the model's own frames. If the truth in the
   context changes nothing, the model does not use its attention context; if true anchors recover
   the teacher-forced quality, the anchors are where the errors enter.
3. **Do things move**: each object's displacement from the last context frame in the generated
   frames, projected on its true displacement (median over objects that moved more than a pixel;
   1: moves as the world does, 0: stands still as copy-last-frame) and the median distance off
   that line.

Prints one table per part; errors are in the state's normalised units, ratios against copy-last.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.objects import locate
from worldforge.evaluation.rollout_eval import EvalClips, baseline_scores, load_clips, predict, score
from worldforge.models.flow import next_anchor
from worldforge.models.sampler import sample
from worldforge.models.streaming import recomputed_velocity
from worldforge.models.world_model import WorldModel
from worldforge.packages import load_package


def teacher_forced(model: WorldModel, clips: EvalClips, config: EvalConfig) -> dict:
    """One-step predictions of every horizon step from the true frames before it, scored per step."""
    frames = torch.cat([clips.context, clips.target], dim=1)
    known, one = clips.context.shape[1], config.model_copy(update={"horizon": 1})
    balls, agent = [], []
    for step in range(clips.horizon):
        cut = slice(step, step + 1)
        clip = replace(
            clips,
            context=frames[:, step : step + known],
            target=clips.target[:, cut],
            actions=clips.actions[:, step : step + known + 1],
            positions=clips.positions[:, cut],
            scored=clips.scored[:, cut],
        )
        scores = score(predict(model, clip, one, torch.device("cpu")), clip)
        balls.append(scores["object_position_error"])
        agent.append(scores["agent_position_error"])
    return {"balls": balls, "agent": agent}


@torch.no_grad()
def swapped_rollout(
    model: WorldModel, clips: EvalClips, context_truth: bool, anchor_truth: bool
) -> torch.Tensor:
    """A one-step rollout recomputed frame by frame, the DiT's context and the anchors each from the
    truth or from the model's own frames. Returns frames (N, horizon, C, H, W)."""
    generator = torch.Generator().manual_seed(0)
    truth = model.tokenizer.encode(torch.cat([clips.context, clips.target], dim=1))
    condition = model.action_condition(clips.actions, truth.shape[1])
    known, count = clips.context.shape[1], model.model_cfg.anchor_frames
    own = list(truth[:, :known].unbind(1))
    for index in range(known, truth.shape[1]):
        generated = torch.stack(own, dim=1)
        context = truth[:, :index] if context_truth else generated
        anchors = truth[:, :index] if anchor_truth else generated
        velocity = recomputed_velocity(
            model,
            context,
            model.anchors(anchors),
            0.0,
            condition[:, : index + 1],
            0,
            next_anchor(anchors[:, -count:], count),
        )
        noise = torch.randn((truth.shape[0], 1, *truth.shape[2:]), generator=generator)
        own.append(sample(velocity, noise, 1, model.sampler_cfg.shift, "euler")[:, 0])
    return model.tokenizer.decode(torch.stack(own[known:], dim=1)).clamp(-1, 1)


def progress(frames: torch.Tensor, clips: EvalClips, steps: list[int]) -> dict:
    """Median projection of each object's generated displacement (from the last context frame) on
    its true one, and median distance off it, per step and per kind (agent, balls)."""
    start = np.stack(
        [locate(c[-1:].numpy(), s)[0] for c, s in zip(clips.context, clips.scenes)]
    )  # (N, 1+K, 2)
    found = np.stack([locate(f, s) for f, s in zip(frames.numpy(), clips.scenes)])  # (N, H, 1+K, 2)
    true, drawn = clips.positions - start[:, None], found - start[:, None]
    pixel = 1.0 / clips.frame_size[1]
    out = {}
    for kind, columns in (("agent", slice(0, 1)), ("balls", slice(1, None))):
        for step in steps:
            t, d = true[:, step - 1, columns], drawn[:, step - 1, columns]
            keep = (
                np.isfinite(d).all(-1)
                & (np.linalg.norm(t, axis=-1) > pixel)
                & clips.scored[:, step - 1, columns]
            )
            t, d = t[keep], d[keep]
            along = (d * t).sum(-1) / (t**2).sum(-1)
            off = np.abs(d[:, 0] * t[:, 1] - d[:, 1] * t[:, 0]) / np.linalg.norm(t, axis=-1)
            out[(kind, step)] = (float(np.median(along)), float(np.median(off)), int(keep.sum()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("packages", nargs="+", type=Path, help="model packages (folders with config.json)")
    parser.add_argument("--dataset", type=Path, required=True, help="a built simulator dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--context", type=int, default=4, help="context frames")
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = EvalConfig(
        split=args.split, episodes=args.episodes, context_frames=args.context, horizon=args.horizon
    )
    clips = load_clips(args.dataset, config)
    if clips.positions is None:
        raise SystemExit(
            f"{args.dataset}: no simulator state to find objects against (simulator datasets only)"
        )
    base = baseline_scores(clips)
    copy_balls, copy_agent = (
        base["baseline_object_position_error_per_step"],
        base["baseline_agent_position_error_per_step"],
    )
    steps = sorted({1, 2, args.horizon // 2, args.horizon})
    header = " | ".join(f"h{s}" for s in range(1, args.horizon + 1))
    print(f"\n1. Ball error per horizon step (copy-last-frame: {' '.join(f'{v:.3f}' for v in copy_balls)})\n")
    print(f"| model | prediction | {header} | agent, mean |")
    print("|---|---|" + "---|" * args.horizon + "---|")
    models = {path.name: load_package(path).build(torch.device("cpu")).eval() for path in args.packages}
    rollouts = {name: predict(model, clips, config, torch.device("cpu")) for name, model in models.items()}
    for name, model in models.items():
        rolled = score(rollouts[name], clips)
        forced = teacher_forced(model, clips, config)
        for label, balls, agent in (
            ("rollout", rolled["object_position_error_per_step"], rolled["agent_position_error"]),
            ("teacher-forced", forced["balls"], float(np.mean(forced["agent"]))),
        ):
            print(f"| {name} | {label} | " + " | ".join(f"{v:.3f}" for v in balls) + f" | {agent:.4f} |")
    print("\n2. Which input carries the rollout's errors (one-step rollouts, ratios of copy-last's errors)\n")
    print("| model | attention context | anchors | dPSNR | agent x | balls x |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        for context_truth, anchor_truth in ((False, False), (True, False), (False, True)):
            scores = score(swapped_rollout(model, clips, context_truth, anchor_truth), clips)
            print(
                f"| {name} | {'truth' if context_truth else 'own'} | {'truth' if anchor_truth else 'own'} | "
                f"{scores['psnr_mean'] - base['baseline_psnr_mean']:+.2f} | "
                f"{scores['agent_position_error'] / base['baseline_agent_position_error']:.2f} | "
                f"{scores['object_position_error'] / base['baseline_object_position_error']:.2f} |"
            )
    print(
        "\n3. Do things move: displacement along the true one (1 = as the world, 0 = standing still), off it\n"
    )
    print("| model | " + " | ".join(f"{kind} h{s}" for kind in ("agent", "balls") for s in steps) + " |")
    print("|---|" + "---|" * (2 * len(steps)))
    for name, frames in rollouts.items():
        moved = progress(frames, clips, steps)
        cells = [
            f"{moved[(k, s)][0]:.2f} ({moved[(k, s)][1]:.3f})" for k in ("agent", "balls") for s in steps
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\ncopy-last agent error per step: {' '.join(f'{v:.3f}' for v in copy_agent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
