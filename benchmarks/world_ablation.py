"""Ablations of the world model: which architecture and objective learn the world in a CPU budget.

Each variant is the quickstart config plus dotted overrides. It is trained for the same wall-clock
budget (the step count is set from the speed of its first steps, so that its learning-rate schedule
ends with the budget), on the dataset's train split (random clips of `data.clip_frames` frames held
in memory), with the trainer's optimizer, schedule, clipping and EMA, then rolled out on the
held-out episodes of `--split` and scored as the evaluation stage scores: PSNR and SSIM against the
copy-last-frame baseline, agent- and ball-position error from the simulator's state.

    python benchmarks/world_ablation.py --dataset ROOT/datasets/simulator-32px --minutes 4 \\
        --variant base --variant patch4="tokenizer.patch_size=4" ...

`--init PACKAGE` starts every variant from a trained package's weights instead (a fine-tune, e.g.
`--train-steps 600 --variant sf=objective.rollout_frames=2,objective.rollout_steps=4,train.lr=3e-4,
train.warmup_steps=20`).

A variant is NAME=OVERRIDE[,OVERRIDE...] (NAME= alone: the config as it is); the named variants
of VARIANTS can be used by name alone. Prints one table row per variant as it finishes, and writes every number to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from worldforge.config import load_config
from worldforge.data.samples import iter_episodes
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.report import write_videos
from worldforge.evaluation.rollout_eval import (
    baseline_scores,
    detector_floor,
    load_clips,
    predict,
    prefix_scores,
    score,
)
from worldforge.models.flops import count_parameters
from worldforge.models.objective import flow_matching_loss
from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import load_package, save_package
from worldforge.training.schedule import warmup_cosine

# The rows of the ablation in the README, as overrides of the current quickstart. SEED is the
# quickstart of session 2 (patch-8 tokens, linear embedding, no stacked frames): the model that did
# not learn the world. Each later row changes one thing (or names what it adds).
SEED = ["tokenizer.patch_size=8", "model.patch_size=1", "model.stem=linear", "model.stack_previous=0",
        "objective.logit_mean=2", "train.lr=1e-3", "train.batch_size=16"]
CONV8 = ["tokenizer.patch_size=1", "model.patch_size=8", "model.stem=conv", "model.stem_channels=32",
         "model.stack_previous=0", "objective.logit_mean=2", "train.lr=1e-3", "train.batch_size=16"]
VARIANTS: dict[str, list[str]] = {
    "quickstart": [],
    "seed": SEED,
    "seed+patch4": [*SEED, "tokenizer.patch_size=4"],
    "seed+stack1": [*SEED, "model.stack_previous=1"],
    "seed+patch4+stack1": [*SEED, "tokenizer.patch_size=4", "model.stack_previous=1"],
    "conv8": CONV8,
    "conv4": [*CONV8, "model.patch_size=4"],
    "conv8+stack1": [*CONV8, "model.stack_previous=1"],
    "conv8+stack1+clean": [*CONV8, "model.stack_previous=1", "objective.training_context=clean"],
    "conv8+stack1+s16": [*CONV8, "model.stack_previous=1", "model.stem_channels=16"],
    "conv8+stack1+lm3": [*CONV8, "model.stack_previous=1", "objective.logit_mean=3"],
    "c16lm3": [*CONV8, "model.stack_previous=1", "model.stem_channels=16", "objective.logit_mean=3"],
    "c16lm3+lr2e-3": [*CONV8, "model.stack_previous=1", "model.stem_channels=16", "objective.logit_mean=3",
                      "train.lr=2e-3"],
    "c16lm3+clean+rollout": [*CONV8, "model.stack_previous=1", "model.stem_channels=16", "objective.logit_mean=3",
                             "objective.training_context=clean", "objective.rollout_prob=0.5"],
    "c16lm3+batch8": [*CONV8, "model.stack_previous=1", "model.stem_channels=16", "objective.logit_mean=3",
                      "train.batch_size=8"],
    "c16lm3+depth6": [*CONV8, "model.stack_previous=1", "model.stem_channels=16", "objective.logit_mean=3",
                      "model.depth=6"],
    "stack1": ["model.stack_previous=1"],
    "stack2": [],
    "stack2+clean": ["objective.training_context=clean"],
    "stack2+clean+rollout": ["objective.training_context=clean", "objective.rollout_prob=0.5"],
}


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, equals, overrides = text.partition("=")
    if not equals:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; named ones: {', '.join(VARIANTS)}")
        return name, VARIANTS[name]
    return name, [o for o in overrides.split(",") if o]


class Clips:
    """Every train episode in memory; `batch(n)` draws n random clips of `length` frames."""

    def __init__(self, dataset: Path, length: int, seed: int):
        episodes = list(iter_episodes(dataset, "train"))
        self.frames = torch.from_numpy(np.stack([e.frames for e in episodes]))  # (E, L, H, W, 3) uint8
        self.actions = torch.from_numpy(np.stack([e.actions for e in episodes]))  # (E, L)
        self.length = length
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        episode = torch.randint(len(self.frames), (n,), generator=self.generator)
        start = torch.randint(self.frames.shape[1] - self.length + 1, (n,), generator=self.generator)
        index = start[:, None] + torch.arange(self.length)
        frames = self.frames[episode[:, None], index]  # (n, T, H, W, 3)
        return {
            "frames": frames.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0,
            "actions": self.actions[episode[:, None], index],
        }


def train(
    model: WorldModel,
    config,
    clips: Clips,
    seconds: float,
    probe_steps: int = 20,
    extra_decays: tuple = (),
    fixed_steps: int = 0,
    schedule_steps: int = 0,
) -> tuple[dict, dict]:
    """Train `model.dit` for `seconds` (the step count, and so the learning-rate schedule, is
    re-estimated every `probe_steps` steps from the speed so far), or for exactly `fixed_steps`
    steps when that is set (comparisons that a busy machine's speed must not decide), its cosine
    over those steps, or over `schedule_steps` when set (a run its budget cut short); loads the EMA
    weights into the model and returns a record, and the DiT's weights averaged with each of
    `extra_decays` (decay -> state dict) from the same run."""
    train_cfg = config.train
    params = [p for p in model.dit.parameters()]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, betas=train_cfg.betas, weight_decay=train_cfg.weight_decay)
    # Every average warms its decay up as the trainer's EMA does: min(decay, (1 + n) / (10 + n)).
    decays = dict.fromkeys([train_cfg.ema_decay, *extra_decays])
    averages = {d: [p.detach().clone() for p in params] for d in decays}
    model.train()
    start = time.perf_counter()
    steps, step, losses = None, 0, []
    schedule = None
    if fixed_steps:
        steps = fixed_steps
        schedule = warmup_cosine(schedule_steps or steps, train_cfg.warmup_steps, train_cfg.min_lr_ratio)
    while True:
        if not fixed_steps and step >= probe_steps and step % probe_steps == 0:  # re-estimated as it goes: robust to load changes
            elapsed = time.perf_counter() - start
            steps = max(step + 1, int(step + (seconds - elapsed) * step / elapsed))
            schedule = warmup_cosine(steps, train_cfg.warmup_steps, train_cfg.min_lr_ratio)
        if steps is not None and step >= steps:
            break
        multiplier = schedule(step) if schedule else min(1.0, (step + 1) / train_cfg.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = train_cfg.lr * multiplier
        batch = clips.batch(train_cfg.batch_size)
        loss, _ = flow_matching_loss(model, batch["frames"], batch["actions"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        optimizer.step()
        with torch.no_grad():
            for decay, average in averages.items():
                weight = 1 - min(decay, (1 + step) / (10 + step))
                for a, p in zip(average, params):
                    a.lerp_(p.detach(), weight)
        losses.append(float(loss.detach()))
        step += 1
    names = [name for name, _ in model.dit.named_parameters()]
    extra = {d: dict(zip(names, averages[d])) for d in extra_decays if d != train_cfg.ema_decay}
    with torch.no_grad():
        for a, p in zip(averages[train_cfg.ema_decay], params):
            p.copy_(a)
    model.eval()
    record = {"steps": step, "seconds": time.perf_counter() - start, "loss_last": float(np.mean(losses[-20:]))}
    return record, extra


def evaluate(model: WorldModel, dataset: Path, eval_cfg: EvalConfig, videos: Path | None = None) -> dict:
    clips = load_clips(dataset, eval_cfg)
    prediction = predict(model, clips, eval_cfg, torch.device("cpu"))
    if videos is not None:
        write_videos(videos, clips, {"model": prediction}, count=4)
    return {**score(prediction, clips), **baseline_scores(clips), **detector_floor(clips)}


def sampler_scores(model: WorldModel, clips, eval_cfg: EvalConfig, videos: Path | None = None) -> dict:
    """One rollout to the long clips' horizon scored at the eval horizon and at the long one
    (generation is causal: its first frames are the short rollout), with the sampler the model has."""
    long_horizon = clips.horizon
    prediction = predict(model, clips, eval_cfg.model_copy(update={"horizon": long_horizon}), torch.device("cpu"))
    if videos is not None:
        write_videos(videos, clips, {"model": prediction}, count=4)
    entries = prefix_scores(prediction, clips, [eval_cfg.horizon, long_horizon])
    return {"short": entries[eval_cfg.horizon], "long": entries[long_horizon]}


def sampler_row(name: str, record: dict, entry: dict, horizon: int, long_horizon: int) -> str:
    short, long = entry["short"], entry["long"]

    def ratio(scores: dict, key: str, index: int | None = None) -> float:
        if f"{key}_per_step" not in scores:
            return math.nan
        if index is None:
            return scores[key] / scores[f"baseline_{key}"]
        return scores[f"{key}_per_step"][index] / scores[f"baseline_{key}_per_step"][index]

    last = long_horizon - 1
    return (
        f"| {name:<30} | {record['steps']:>5} | {short['psnr_mean'] - short['baseline_psnr_mean']:+5.2f} | "
        f"{short['ssim_mean'] - short['baseline_ssim_mean']:+.3f} | "
        f"{ratio(short, 'agent_position_error'):.2f}x | {ratio(short, 'object_position_error'):.2f}x | "
        f"{short['sharpness_mean']:.2f} | {long['sharpness_per_step'][last]:.2f} | "
        f"{long['ssim_per_step'][last] - long['baseline_ssim_per_step'][last]:+.3f} | "
        f"{ratio(long, 'agent_position_error', last):.2f}x | {ratio(long, 'object_position_error', 15):.2f}x / "
        f"{ratio(long, 'object_position_error', last):.2f}x | {long['motion_ratio']:.2f} |"
    )


SAMPLER_HEADER = (
    "| variant @ solver:steps            | steps | dPSNR | dSSIM  | agent | balls | sharp1-8 | sharp32 | dSSIM32 "
    "| agent32 | balls16/32 | motion32 |"
)


def parse_sampler(text: str) -> dict:
    """solver:steps[:shift] -> sampler config overrides."""
    parts = text.split(":")
    update = {"solver": parts[0], "steps": int(parts[1])}
    if len(parts) > 2:
        update["shift"] = float(parts[2])
    return update


def row(name: str, record: dict, scores: dict, horizon: int) -> str:
    def ratio(key: str, index: int | None = None) -> float:
        mine, base = scores.get(f"{key}_per_step" if index is not None else key), scores.get(
            f"baseline_{key}_per_step" if index is not None else f"baseline_{key}"
        )
        if mine is None or base is None:
            return math.nan
        return (mine[index] / base[index]) if index is not None else mine / base

    gain = scores["psnr_mean"] - scores["baseline_psnr_mean"]
    gain_h = scores["psnr_per_step"][horizon - 1] - scores["baseline_psnr_per_step"][horizon - 1]
    return (
        f"| {name:<24} | {record['steps']:>5} | {record['loss_last']:.4f} | {scores['psnr_mean']:6.2f} | "
        f"{gain:+5.2f} | {gain_h:+5.2f} | {scores['ssim_mean']:.3f} / {scores['baseline_ssim_mean']:.3f} | "
        f"{scores['agent_position_error']:.4f} ({ratio('agent_position_error'):.2f}x, "
        f"h{horizon} {ratio('agent_position_error', horizon - 1):.2f}x) | "
        f"{scores.get('object_position_error', math.nan):.4f} ({ratio('object_position_error'):.2f}x) |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="a built simulator dataset folder")
    parser.add_argument("--config", default="quickstart", help="the preset every variant starts from")
    parser.add_argument("--variant", action="append", default=[], help="NAME or NAME=OVERRIDE[,OVERRIDE...]")
    parser.add_argument("--minutes", type=float, default=4.0, help="training wall-clock per variant")
    parser.add_argument("--split", default="test", help="held-out split scored")
    parser.add_argument("--episodes", type=int, default=24, help="held-out episodes scored")
    parser.add_argument("--horizon", type=int, default=8, help="frames generated per episode")
    parser.add_argument("--long-horizon", type=int, default=0, help="also score this horizon (e.g. 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("world_ablation.json"))
    parser.add_argument("--videos", type=Path, help="write side-by-side GIFs of 4 episodes per variant here")
    parser.add_argument("--packages", type=Path, help="save each trained variant as a model package here")
    parser.add_argument(
        "--ema-decays", type=float, nargs="*", default=[],
        help="also score the weights averaged with these EMA decays, from the same runs (rows NAME@ema<decay>)",
    )
    parser.add_argument("--init", type=Path,
                        help="start every variant from this package's weights (a fine-tune; its "
                        "architecture must be the variant's)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train every variant for exactly this many steps (instead of --minutes)")
    parser.add_argument("--cut-schedule", action="store_true",
                        help="with --train-steps: run the cosine over the config's train.steps and stop at "
                        "--train-steps, as the pipeline's budget stops a slower machine (default: the cosine "
                        "fitted to --train-steps, as train.lr_schedule=budget ends)")
    parser.add_argument("--samplers", nargs="*", default=[],
                        help="score each variant with each sampler, SOLVER:STEPS[:SHIFT] (e.g. euler:1 "
                        "ancestral:4), one rollout to --long-horizon (default 32) per sampler: sharpness, "
                        "SSIM, errors and motion at the horizon and beyond")
    args = parser.parse_args(argv)
    if args.samplers and args.ema_decays:
        parser.error("--samplers scores the trainer's EMA only: leave out --ema-decays")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in (args.variant or ["quickstart"])]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    print(
        f"| {'variant':<24} | steps | loss   | PSNR   | dPSNR | dh{args.horizon:<3}| SSIM (copy-last) | "
        "agent error (vs copy-last) | ball error (vs copy-last) |"
    )
    for name, overrides in variants:
        config = load_config(args.config, overrides)
        torch.manual_seed(config.project.seed)
        model = WorldModel(config.tokenizer, config.model, config.objective, config.sampler)
        if args.init:
            model.load_state_dict(load_package(args.init).state)
        clips = Clips(args.dataset, config.data.clip_frames, config.project.seed)
        record, averaged = train(model, config, clips, args.minutes * 60, extra_decays=tuple(args.ema_decays),
                                 fixed_steps=args.train_steps,
                                 schedule_steps=config.train.steps if args.cut_schedule else 0)
        record["parameters"] = count_parameters(model.dit)
        eval_cfg = EvalConfig(
            split=args.split, episodes=args.episodes, context_frames=config.eval.context_frames, horizon=args.horizon
        )
        if args.packages:
            save_package(args.packages / name, package_config(model), model, lineage={"stage": "world_ablation",
                                                                                      "overrides": overrides})
        if args.samplers:
            long_horizon = args.long_horizon or 32
            long_clips = load_clips(args.dataset, eval_cfg, long_horizon=long_horizon)  # one set for every sampler
            entries = {}
            print(SAMPLER_HEADER, flush=True)
            for spec in args.samplers:
                model.sampler_cfg = config.sampler.model_copy(update=parse_sampler(spec))
                videos = args.videos / name / spec.replace(":", "_") if args.videos else None
                entries[spec] = sampler_scores(model, long_clips, eval_cfg, videos)
                print(sampler_row(f"{name} @ {spec}", record, entries[spec], args.horizon, long_horizon), flush=True)
            model.sampler_cfg = config.sampler
            results[name] = {"overrides": overrides, "record": record, "samplers": entries}
            args.out.write_text(json.dumps(results, indent=1))
            continue
        for decay, state in averaged.items():
            twin = WorldModel(config.tokenizer, config.model, config.objective, config.sampler)
            twin.dit.load_state_dict(state)
            scores = evaluate(twin.eval(), args.dataset, eval_cfg)
            results[f"{name}@ema{decay}"] = {"overrides": overrides, "record": record, "scores": scores}
            print(row(f"{name}@ema{decay}", record, scores, args.horizon), flush=True)
        videos = args.videos / name if args.videos else None
        scores = evaluate(model, args.dataset, eval_cfg, videos)
        entry = {"overrides": overrides, "record": record, "scores": scores}
        if args.long_horizon:
            long_cfg = eval_cfg.model_copy(update={"horizon": args.long_horizon})
            entry["long"] = evaluate(model, args.dataset, long_cfg, videos and videos / "long")
        results[name] = entry
        args.out.write_text(json.dumps(results, indent=1))
        print(row(name, record, scores, args.horizon), flush=True)
        if args.long_horizon:
            print(row(f"  {name} h{args.long_horizon}", record, entry["long"], args.long_horizon), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
