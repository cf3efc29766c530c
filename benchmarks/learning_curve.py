"""The learning curve of a training run, read back from MLflow: is the model still improving when
the budget ends?

    python benchmarks/learning_curve.py --root ROOT [--run RUN_ID] [--stage pretrain_world] [--out DIR]

Without --run, the newest stage run of `--stage` in the project's store. Prints, per validation
step, the training loss around it, the held-out rollout PSNR against copy-last-frame, and the
agent / ball position error as a fraction of copy-last-frame's (below 1: the model follows the
actions and moves the world better than standing still), and writes DIR/learning_curve.{md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CURVES = (
    ("val/psnr_gain_over_baseline", "PSNR - copy-last (dB)", "{:+.2f}"),
    ("val/ssim_mean", "SSIM", "{:.3f}"),
    ("val/agent_error_ratio", "agent error (x copy-last)", "{:.2f}"),
    ("val/object_error_ratio", "ball error (x copy-last)", "{:.2f}"),
)


def newest_run(client, stage: str):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.stage = '{stage}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SystemExit(f"no MLflow run with tag stage={stage!r} in this store")
    return runs[0]


def history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="project root (default: $WORLDFORGE_ROOT or the current folder)")
    parser.add_argument("--run", help="MLflow run id (default: the newest run of --stage)")
    parser.add_argument("--stage", default="pretrain_world")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.root:
        os.environ["WORLDFORGE_ROOT"] = str(args.root.resolve())

    import mlflow

    from worldforge.core import tracking
    from worldforge.evaluation.report import plot_curves

    tracking.configure()
    client = mlflow.MlflowClient()
    run = client.get_run(args.run) if args.run else newest_run(client, args.stage)
    curves = {key: history(client, run.info.run_id, key) for key, _, _ in CURVES}
    loss = history(client, run.info.run_id, "train/loss")
    steps = sorted(set().union(*(c.keys() for c in curves.values())))
    if not steps:
        raise SystemExit(f"run {run.info.run_id} logged no validation metrics")
    header = ["step", "train loss", *(label for _, label, _ in CURVES)]
    lines = [f"run {run.info.run_id} ({run.data.tags.get('stage', '?')})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in steps:
        near = [value for s, value in loss.items() if step - 50 < s <= step]
        cells = [str(step), f"{sum(near) / len(near):.4f}" if near else "-"]
        cells += [fmt.format(curves[key][step]) if step in curves[key] else "-" for key, _, fmt in CURVES]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curve.md").write_text(text + "\n")
    ratios = {label: [curves[key].get(s, float("nan")) for s in steps]
              for key, label, _ in CURVES if "ratio" in key}
    plot_curves(args.out / "learning_curve.png", ratios, "position error vs copy-last-frame during training",
                ylabel="fraction of copy-last-frame's error", steps=steps, xlabel="training step")
    print(f"wrote {args.out / 'learning_curve.md'} and learning_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
