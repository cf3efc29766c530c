"""What a person reads at the end of a pipeline run: where to look, and how the champion does."""

from __future__ import annotations

from typing import Any

from worldforge.platform import tracking
from worldforge.platform.project import Project


def print_summary(result: dict[str, Any]) -> None:
    """Print the stages (ran or cached), the champion against copy-last-frame, and where the
    MLflow UI, the reports (plot, videos) and the packages are."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    project = Project.current()
    metrics = result["metrics"]
    stages = Table(title="train_and_compress")
    stages.add_column("stage")
    stages.add_column("result")
    for stage, cached in result["cached"].items():
        stages.add_row(stage, "cached (inputs unchanged)" if cached else "ran")
    console.print(stages)

    horizon = len(metrics.get("psnr_per_step", []))
    quality = Table(title=f"version {result['version']} on held-out episodes (PSNR dB per horizon step)")
    quality.add_column("horizon")
    quality.add_column("model", justify="right")
    quality.add_column("copy-last-frame", justify="right")
    for step in range(horizon):
        quality.add_row(
            str(step + 1), f"{metrics['psnr_per_step'][step]:.2f}", f"{metrics['baseline_psnr_per_step'][step]:.2f}"
        )
    quality.add_row("mean", f"{metrics['psnr_mean']:.2f}", f"{metrics['baseline_psnr_mean']:.2f}")
    console.print(quality)
    console.print(
        f"SSIM {metrics['ssim_mean']:.3f} (baseline {metrics['baseline_ssim_mean']:.3f}); "
        f"end-to-end {metrics['fps_e2e']:.1f} frames/s on {metrics['device']}"
    )
    if result.get("compressed"):
        compressed = Table(title="compression stages (each evaluated against its parent on the same episodes)")
        for column in ("stage", "version", "PSNR dB", "vs parent", "frames/s e2e", "parameters", "promotion"):
            compressed.add_column(column)
        for entry in result["compressed"]:
            own = entry["metrics"]
            delta = own.get("comparison", {}).get("psnr_mean", {}).get("delta")
            outcome = entry.get("decision", {}).get("outcome", "-")
            compressed.add_row(
                entry["stage"],
                str(entry["version"]),
                f"{own['psnr_mean']:.2f}",
                "-" if delta is None else f"{delta:+.2f}",
                f"{own['fps_e2e']:.1f}",
                str(own.get("parameters", "-")),
                outcome,
            )
        console.print(compressed)
    decision = result.get("decision")
    if decision:
        verdict = "promoted to champion" if decision["promoted"] else f"not promoted ({decision['outcome']})"
        failed = f", failed checks: {', '.join(decision['failed_checks'])}" if decision["failed_checks"] else ""
        console.print(f"registry: version {result['version']} {verdict}{failed}; champion is {decision['champion_after']}")
    uri = tracking.tracking_uri(project)
    console.print("\nwhere to look:")
    console.print(f"  MLflow UI:  mlflow ui --backend-store-uri {uri}   (run {result['mlflow_run_id']})")
    console.print(f"  report:     {metrics.get('report_dir', '')}  (report.json, psnr_vs_horizon.png, videos/)")
    console.print(f"  package:    {result['world']['path']}")
    console.print(f"  dataset:    {result['dataset']['path']}  (DVC md5 {result['dataset']['md5']})")
