"""Distillation report: the teacher at its full step count vs students at 1, 2 and 4 steps of
every method, same held-out episodes, same noise, one run.

    python benchmarks/distill_report.py --teacher PACKAGE (--dataset DATASET | --root ROOT)
        [--preset quickstart] [--teacher-steps 32] [--methods progressive consistency dmd]
        [--steps 4 2 1] [--students LABEL=PACKAGE ...] [--out DIR] [-o KEY=VALUE ...]

The students of --methods are distilled here, with `distill` of the preset (train_steps, lr,
distill.dmd.*) and `train` (micro-batch, engine, EMA):
- progressive: a chain, teacher (--teacher-steps) -> 4 -> 2 -> 1 steps (each student is the next
  one's teacher, so every step count costs only its own rounds);
- consistency: one multistep consistency student per step count, each from the teacher;
- dmd: one distribution-matching student per step count, each from the teacher;
- dmd-rollout: the same with `distill.dmd.rollout_frames` (training on the student's own rollouts).
--methods none distills nothing. --students adds packages already made (LABEL=PATH), evaluated at
their recorded `sampler.steps`.

Every model is scored with `worldforge.evaluation` on the preset's `eval` clips: PSNR/SSIM vs
ground truth, PSNR vs the teacher's own rollout (same noise seed), action-following (the agent's
position error in frame widths, simulator data), and frames/s of the denoising loop and end to end
(median of `eval.latency_repeats` batch-1 rollouts), and sharpness (high-frequency energy over
the truth's). With `eval.long_horizon` (e.g. -o "eval.long_horizon=[16,32,64]") every model also
rolls out that far through the sliding KV window, on --long-dataset's held-out episodes (default
the same dataset; they must be long enough), and a second table gives PSNR gain, agent and ball
error against copy-last-frame at each horizon. The targets are printed under the tables: the
4-step progressive student within 1 dB PSNR of the teacher and at least 5x faster in the denoising
loop; the 2-step DMD student at least as sharp as the teacher and within 1 dB.
Writes DIR/distill_report.{md,json} and DIR/horizon.png, DIR/long_horizon.png (every model's
curves on one figure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def distill_students(args, config, method: str, teacher_steps: int) -> list[dict]:
    from worldforge.compression.distill.stage import distill_package

    rows, source, source_steps = [], args.teacher, teacher_steps
    for steps in sorted(args.steps, reverse=True):
        update = {"method": method.removesuffix("-rollout"), "steps": steps, "teacher_steps": teacher_steps}
        if method == "progressive":
            update["teacher_steps"] = source_steps
        if method == "dmd-rollout":
            update["dmd"] = config.distill.dmd.model_copy(update={"rollout_frames": args.rollout_frames})
        cfg = config.distill.model_copy(update=update)
        out = args.out / f"{method}-{steps}"
        start = time.perf_counter()
        distill_package(source, config, cfg, args.dataset, out, track=False)
        seconds = time.perf_counter() - start
        print(f"{method} student, {steps} steps: {out} ({seconds:.0f} s)", file=sys.stderr)
        rows.append({"model": f"{method} student", "source": str(out), "seconds": seconds})
        if method == "progressive":
            source, source_steps = str(out), steps
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="teacher package folder (or models:/name@alias)")
    parser.add_argument("--dataset", type=Path, help="dataset folder (default: <root>/datasets/<data.name>)")
    parser.add_argument("--root", type=Path, help="project root (default: $WORLDFORGE_ROOT or the cwd)")
    parser.add_argument(
        "--preset", default="quickstart", help="config preset or YAML path (default quickstart)"
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        help="teacher's Euler steps (default: distill.teacher_steps, else its package's sampler.steps)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["progressive", "consistency", "dmd", "dmd-rollout", "none"],
        default=["progressive", "consistency", "dmd"],
    )
    parser.add_argument(
        "--rollout-frames", type=int, default=2, help="dmd-rollout: distill.dmd.rollout_frames"
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2, 1], help="student step counts")
    parser.add_argument("--students", nargs="+", default=[], help="also evaluate these packages: LABEL=PATH")
    parser.add_argument(
        "--out", type=Path, default=Path("distill-report"), help="folder for students and report"
    )
    parser.add_argument("--long-dataset", type=Path, help="dataset of the long rollouts (default: --dataset)")
    parser.add_argument("-o", "--override", action="append", default=[], help="config override KEY=VALUE")
    args = parser.parse_args(argv)
    if args.root:
        os.environ["WORLDFORGE_ROOT"] = str(args.root.resolve())

    from worldforge.config import load_config
    from worldforge.core.runtime import select_device, setup_logging
    from worldforge.data.shards import default_output
    from worldforge.evaluation import metrics as quality
    from worldforge.evaluation.evaluate import measure, open_subject
    from worldforge.evaluation.report import plot_models, ratio_cell
    from worldforge.evaluation.rollout_eval import load_clips

    setup_logging("WARNING")
    config = load_config(args.preset, args.override)
    args.dataset = args.dataset or default_output(config.data)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher = open_subject(args.teacher)
    teacher_steps = (
        args.teacher_steps or config.distill.teacher_steps or teacher.package.config["sampler"]["steps"]
    )
    rows = [{"model": "teacher", "source": str(args.teacher), "steps": teacher_steps}]
    for method in args.methods:
        if method != "none":
            rows += distill_students(args, config, method, teacher_steps)
    for student in args.students:
        label, _, path = student.rpartition("=")
        rows.append({"model": label or "student", "source": path})

    device = select_device(config.eval.device)
    clips = load_clips(args.dataset, config.eval)
    horizons = config.eval.long_horizons
    long_clips = None
    if horizons:
        long_clips = load_clips(args.long_dataset or args.dataset, config.eval, long_horizon=horizons[-1])
    teacher_frames = None
    for row in rows:
        subject = open_subject(row["source"])
        row.setdefault("steps", subject.package.config["sampler"]["steps"])
        eval_cfg = config.eval.model_copy(update={"denoise_steps": row["steps"]})
        row["metrics"], frames = measure(subject, clips, eval_cfg, device, long_clips=long_clips)
        if teacher_frames is None:
            teacher_frames = frames
        row["psnr_vs_teacher"] = quality.overall(quality.psnr(frames, teacher_frames))
    reference = rows[0]["metrics"]

    lines = [
        (
            "| model | steps | PSNR | dPSNR | SSIM | sharpness | PSNR vs teacher | agent err (x teacher) "
            "| ball err (x teacher) | fps denoise | speedup | fps e2e | distill s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["metrics"]
        lines.append(
            f"| {row['model']} | {row['steps']} | {m['psnr_mean']:.2f} | {m['psnr_mean'] - reference['psnr_mean']:+.2f} "
            f"| {m['ssim_mean']:.3f} | {m.get('sharpness_mean', float('nan')):.2f} | {row['psnr_vs_teacher']:.2f} "
            f"| {ratio_cell(m.get('agent_position_error'), reference.get('agent_position_error'))} "
            f"| {ratio_cell(m.get('object_position_error'), reference.get('object_position_error'))} "
            f"| {m['fps_denoise']:.1f} | {m['fps_denoise'] / reference['fps_denoise']:.1f}x | {m['fps_e2e']:.1f} "
            f"| {row.get('seconds', float('nan')):.0f} |"
        )
    targets = []
    for row in rows[1:]:
        m = row["metrics"]
        drop = reference["psnr_mean"] - m["psnr_mean"]
        if row["steps"] == 4 and row["model"].startswith("progressive"):
            speedup = m["fps_denoise"] / reference["fps_denoise"]
            targets.append(
                f"target (4-step {row['model']} within 1 dB of the teacher, >= 5x faster denoising): PSNR drop "
                f"{drop:.2f} dB ({'met' if drop <= 1 else 'not met'}), speedup {speedup:.1f}x "
                f"({'met' if speedup >= 5 else 'not met'})"
            )
        if row["steps"] == 2 and row["model"].startswith("dmd") and "sharpness_mean" in m:
            sharp = m["sharpness_mean"] >= reference["sharpness_mean"]
            targets.append(
                f"target (2-step {row['model']} at least as sharp as the teacher and within 1 dB): sharpness "
                f"{m['sharpness_mean']:.3f} vs {reference['sharpness_mean']:.3f} ({'met' if sharp else 'not met'}), "
                f"PSNR drop {drop:.2f} dB ({'met' if drop <= 1 else 'not met'})"
            )
    target = "\n".join(targets) or "targets: no 4-step progressive or 2-step DMD student in this report"
    baseline = (
        f"copy-last-frame baseline on the same clips: PSNR {reference['baseline_psnr_mean']:.2f}, "
        f"SSIM {reference['baseline_ssim_mean']:.3f}, agent err "
        f"{ratio_cell(reference.get('baseline_agent_position_error'), None)}, ball err "
        f"{ratio_cell(reference.get('baseline_object_position_error'), None)}"
    )
    facts = (
        f"{len(clips.episodes)} episodes of {Path(args.dataset).name}/{config.eval.split}, context "
        f"{config.eval.context_frames}, horizon {clips.horizon}, device {reference['device']}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    long_lines = []
    if long_clips is not None:
        long_lines = [
            "",
            (
                f"long rollouts ({len(long_clips.episodes)} episodes of {Path(args.long_dataset or args.dataset).name}): "
                "PSNR gain over copy-last-frame (dB) / agent error x copy-last / ball error x copy-last / sharpness, "
                "means over steps 1..H"
            ),
            "",
            "| model | steps | " + " | ".join(f"h{h}" for h in horizons) + " |",
            "|---|---|" + "---|" * len(horizons),
        ]
        for row in rows:
            m, cells = row["metrics"], []
            for h in horizons:
                gain = m[f"long_h{h}_psnr_mean"] - m[f"long_h{h}_baseline_psnr_mean"]
                agent = m.get(f"long_h{h}_agent_position_error", float("nan")) / m.get(
                    f"long_h{h}_baseline_agent_position_error", float("nan")
                )
                balls = m.get(f"long_h{h}_object_position_error", float("nan")) / m.get(
                    f"long_h{h}_baseline_object_position_error", float("nan")
                )
                cells.append(
                    f"{gain:+.2f} / {agent:.2f}x / {balls:.2f}x / {m.get(f'long_h{h}_sharpness_mean', float('nan')):.2f}"
                )
            long_lines.append(f"| {row['model']} | {row['steps']} | " + " | ".join(cells) + " |")
    models = {f"{row['model']} ({row['steps']} steps)": row["metrics"] for row in rows}
    plot_models(args.out / "horizon.png", models, f"teacher and students on {Path(args.dataset).name}")
    if long_clips is not None:
        plot_models(args.out / "long_horizon.png", models, "long rollouts", prefix="long_", marks=horizons)
    table = "\n".join([*lines, "", target, baseline, facts, *long_lines])
    print(table)
    (args.out / "distill_report.md").write_text(table + "\n")
    (args.out / "distill_report.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
