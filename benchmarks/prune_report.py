"""Pruning report: unpruned vs pruned-before-recovery vs pruned-after-recovery, same episodes, one run.

    python benchmarks/prune_report.py --model PACKAGE --dataset DATASET [--preset quickstart]
        [--remove 0.3 0.5] [--out DIR] [-o KEY=VALUE ...]

For each fraction in --remove, prunes the package to keep (1 - fraction) of the DiT's parameters
(`prune.target.params`), once without recovery and once with it (`prune.recovery` of the preset:
distillation from the unpruned model on the shared trainer), then evaluates the three kinds of
model on the same held-out clips (`eval` of the preset) and prints one markdown table: parameters,
FLOPs per frame, frames/s (denoising loop and end to end, median of `eval.latency_repeats` runs,
the models taking turns), peak memory, PSNR/SSIM vs ground truth, and action-following (the
agent's and the balls' position error, in frame widths, with their ratio to the unpruned model's).
The table and every metric go to DIR/prune_report.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model package folder (or models:/name@alias) to prune")
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder: calibration, recovery, eval")
    parser.add_argument("--preset", default="quickstart", help="config preset or YAML path (default quickstart)")
    parser.add_argument("--remove", type=float, nargs="+", default=[0.3, 0.5], help="parameter fractions removed")
    parser.add_argument("--out", type=Path, default=Path("prune-report"), help="folder for packages and the report")
    parser.add_argument("-o", "--override", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args(argv)

    from worldforge.compression.prune.stage import prune_package
    from worldforge.config import load_config
    from worldforge.core.runtime import select_device, setup_logging
    from worldforge.evaluation.cost import measure_costs
    from worldforge.evaluation.evaluate import measure, open_subject
    from worldforge.evaluation.report import ratio_cell
    from worldforge.evaluation.rollout_eval import load_clips

    setup_logging("WARNING")
    config = load_config(args.preset, args.override)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = [{"model": "unpruned", "removed": 0.0, "source": str(args.model)}]
    for fraction in args.remove:
        cfg = config.prune.model_copy(update={"target": {"params": round(1.0 - fraction, 4)}})
        for recover in (False, True):
            label = f"pruned {fraction:.0%}, {'after' if recover else 'before'} recovery"
            out = args.out / f"prune-{round(fraction * 100)}-{'recovered' if recover else 'raw'}"
            start = time.perf_counter()
            prune_package(args.model, config, cfg, args.dataset, out, recover=recover, track=False)
            seconds = time.perf_counter() - start
            print(f"{label}: {out} ({seconds:.0f} s)", file=sys.stderr)
            rows.append({"model": label, "removed": fraction, "source": str(out), "seconds": seconds})

    device = select_device(config.eval.device)
    clips = load_clips(args.dataset, config.eval)
    subjects = [open_subject(row["source"]) for row in rows]
    for row, subject in zip(rows, subjects, strict=True):
        row["metrics"], _ = measure(subject, clips, config.eval, device, cost=False)
    # Speed in turns (every model once per round), so the ratios hold on a machine whose load drifts.
    models = [subject.package.build(device) for subject in subjects]
    costs = measure_costs(models, clips, config.eval, device, [None] * len(models))
    for row, cost in zip(rows, costs, strict=True):
        row["metrics"].update(cost)
    reference = rows[0]["metrics"]

    header = (
        "| model | params (DiT) | kept | GFLOPs/frame | fps denoise | fps e2e | peak MB | PSNR | dPSNR | SSIM "
        "| agent err (x unpruned) | ball err (x unpruned) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        m = row["metrics"]
        lines.append(
            f"| {row['model']} | {m['parameters_dit']:,} | {m['parameters_dit'] / reference['parameters_dit']:.1%} | "
            f"{m['flops_per_frame'] / 1e9:.3f} | "
            f"{m['fps_denoise']:.1f} | {m['fps_e2e']:.1f} | {m['peak_memory_mb']:.1f} | {m['psnr_mean']:.2f} | "
            f"{m['psnr_mean'] - reference['psnr_mean']:+.2f} | {m['ssim_mean']:.3f} | "
            f"{ratio_cell(m.get('agent_position_error'), reference.get('agent_position_error'))} | "
            f"{ratio_cell(m.get('object_position_error'), reference.get('object_position_error'))} |"
        )
    baseline = (
        f"copy-last-frame baseline on the same clips: PSNR {reference['baseline_psnr_mean']:.2f}, "
        f"SSIM {reference['baseline_ssim_mean']:.3f}, agent err "
        f"{ratio_cell(reference.get('baseline_agent_position_error'), None)}, ball err "
        f"{ratio_cell(reference.get('baseline_object_position_error'), None)}"
    )
    facts = (
        f"{len(clips.episodes)} episodes of {args.dataset.name}/{config.eval.split}, context "
        f"{config.eval.context_frames}, horizon {clips.horizon}, device {reference['device']}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    table = "\n".join([*lines, "", baseline, facts])
    print(table)
    (args.out / "prune_report.md").write_text(table + "\n")
    (args.out / "prune_report.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
