"""`worldforge eval MODEL [--reference MODEL2]`: quality and cost of a model on held-out episodes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from worldforge.cli.common import OVERRIDES, exit_on_error, run_as_flow

# (metric, label, format) rows of the summary table, in reading order
ROWS = (
    ("psnr_mean", "PSNR mean (dB)", "{:.2f}"),
    ("baseline_psnr_mean", "  copy-last-frame PSNR (dB)", "{:.2f}"),
    ("psnr_gain_over_baseline", "  gain over copy-last (dB)", "{:+.2f}"),
    ("ssim_mean", "SSIM mean", "{:.4f}"),
    ("baseline_ssim_mean", "  copy-last-frame SSIM", "{:.4f}"),
    ("sharpness_mean", "sharpness (1 = as sharp as truth)", "{:.3f}"),
    ("agent_position_error", "agent position error", "{:.4f}"),
    ("baseline_agent_position_error", "  copy-last-frame error", "{:.4f}"),
    ("agent_found_fraction", "  agent found in frames", "{:.0%}"),
    ("agent_position_error_ground_truth", "  detector floor", "{:.4f}"),
    ("object_position_error", "ball position error", "{:.4f}"),
    ("baseline_object_position_error", "  copy-last-frame error", "{:.4f}"),
    ("object_found_fraction", "  balls found in frames", "{:.0%}"),
    ("object_position_error_ground_truth", "  detector floor", "{:.4f}"),
    ("fps_denoise", "frames/s, denoising", "{:.1f}"),
    ("fps_e2e", "frames/s, end to end", "{:.1f}"),
    ("latency_ms_median", "latency/frame median (ms)", "{:.1f}"),
    ("latency_ms_p95", "latency/frame p95 (ms)", "{:.1f}"),
    ("peak_memory_mb", "peak memory (MiB)", "{:.1f}"),
    ("parameters", "parameters", "{:,.0f}"),
    ("flops_per_frame", "GFLOPs/frame", "{:.3f}"),
)


def _cell(value: Any, fmt: str, metric: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return fmt.format(value / 1e9 if metric == "flops_per_frame" else value)


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    reference = result.get("reference")
    table = Table(
        title=f"evaluation: {result['episodes']} episodes, {result['context_frames']} context frames, "
        f"horizon {result['horizon']}, {result['denoise_steps']} denoising steps, {result['device']}"
    )
    table.add_column("metric")
    table.add_column("model", justify="right")
    if reference:
        for column in ("reference", "delta", "ratio"):
            table.add_column(column, justify="right")
    for metric, label, fmt in ROWS:
        if metric not in result:
            continue
        row = [label, _cell(result[metric], fmt, metric)]
        if reference:
            compared = result["comparison"].get(metric, {})
            signed = fmt if fmt.startswith("{:+") else fmt.replace("{:", "{:+", 1)
            row += [
                _cell(reference.get(metric), fmt, metric),
                "-" if "delta" not in compared else _cell(compared["delta"], signed, metric),
                "-" if compared.get("ratio") is None else f"{compared['ratio']:.3f}x",
            ]
        table.add_row(*row)
    console = Console()
    console.print(table)
    verdict = "beats" if result["beats_baseline"] else "does NOT beat"
    console.print(f"the model {verdict} the copy-last-frame baseline")
    console.print(
        f"report: {result['report_dir']} (report.json, psnr_vs_horizon.png, position_error_vs_horizon.png, videos/)"
    )


def eval_command(
    model: str = typer.Argument(
        ..., help="A package folder, or models:/NAME@ALIAS, or models:/NAME/VERSION."
    ),
    reference: str | None = typer.Option(
        None,
        "--reference",
        "-r",
        help="A second model measured in the same run; the report shows deltas and ratios.",
    ),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Dataset folder; default: the config's dataset, built if missing (Prefect flow).",
    ),
    config: str = typer.Option(
        "quickstart", "--config", "-c", help="Preset name (configs/NAME.yaml) or a YAML path."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder (default <root>/reports/eval/NAME); with --dataset."
    ),
    no_track: bool = typer.Option(False, "--no-track", help="Do not record an MLflow run; with --dataset."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Roll MODEL out on held-out episodes: PSNR/SSIM per horizon step vs the copy-last-frame
    baseline, action-following (simulator), parameters, FLOPs, frames/s, latency and peak memory.
    Writes metrics.json into the package, a report folder, and an MLflow run `evaluate`."""
    with exit_on_error():
        if dataset is None:
            from worldforge.cli.common import brief_console_errors, prefect_ready

            root = prefect_ready()
            from worldforge.pipelines.flows import evaluate_flow

            brief_console_errors()

            result = evaluate_flow(
                model=model,
                reference=reference,
                preset=config,
                overrides=list(overrides or []),
                root=str(root),
            )
        else:
            from worldforge.config import load_config
            from worldforge.evaluation import evaluate_package

            resolved = load_config(config, list(overrides or []))
            result = run_as_flow(
                "evaluate",
                evaluate_package,
                package=model,
                dataset=dataset,
                config=resolved.eval,
                reference=reference,
                out_dir=out,
                track=not no_track,
                experiment=resolved.project.experiment,
            )
    print_report(result)
