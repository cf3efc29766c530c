"""What a person reads at the end of a pipeline run: where to look, and how the champion does."""

from __future__ import annotations

from typing import Any

from worldforge.platform import tracking
from worldforge.platform.project import Project


def champion_of(result: dict[str, Any]) -> tuple[str | None, str, dict[str, Any], str]:
    """(champion version after the run, its stage, its metrics, its package path) from the run's
    last promotion decision; metrics and path are this run's pretrained model's when the champion
    is a version this run did not produce (or nothing was promoted)."""
    entries = [{"stage": "pretrain", "version": result["version"], "decision": result.get("decision"),
                "metrics": result["metrics"], "package": result["world"]}]
    entries += result.get("compressed", [])
    decisions = [entry["decision"] for entry in entries if entry.get("decision")]
    champion = decisions[-1]["champion_after"] if decisions else None
    for entry in entries:
        if champion is not None and str(entry["version"]) == str(champion):
            return str(champion), entry["stage"], entry["metrics"], entry["package"]["path"]
    return (None if champion is None else str(champion)), "", result["metrics"], result["world"]["path"]


def print_summary(result: dict[str, Any]) -> None:
    """Print the stages (ran or cached), every promotion decision, the champion against
    copy-last-frame, and where the MLflow UI, the reports (plot, videos) and the packages are."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=120)
    project = Project.current()
    stages = Table(title="train_and_compress")
    stages.add_column("stage")
    stages.add_column("result")
    for stage, cached in result["cached"].items():
        stages.add_row(stage, "cached (inputs unchanged)" if cached else "ran")
    console.print(stages)

    pretrained = result["metrics"]
    versions = Table(title="registered versions (compression stages evaluated against their parent, same episodes)")
    for column in ("stage", "version", "PSNR dB", "vs parent", "vs copy-last", "frames/s e2e", "parameters",
                   "promotion"):
        versions.add_column(column)
    rows = [{"stage": "pretrain", "version": result["version"], "metrics": pretrained,
             "decision": result.get("decision", {})}, *result.get("compressed", [])]
    for entry in rows:
        own = entry["metrics"]
        delta = own.get("comparison", {}).get("psnr_mean", {}).get("delta")
        decision = entry.get("decision") or {}
        outcome = decision.get("outcome", "-")
        if decision.get("failed_checks"):
            outcome += f" ({', '.join(decision['failed_checks'])})"
        versions.add_row(
            entry["stage"],
            str(entry["version"]),
            f"{own['psnr_mean']:.2f}",
            "-" if delta is None else f"{delta:+.2f}",
            f"{own['psnr_mean'] - own['baseline_psnr_mean']:+.2f}",
            f"{own['fps_e2e']:.1f}",
            f"{own.get('parameters', 0):,}",
            outcome,
        )
    console.print(versions)

    champion, stage, metrics, package = champion_of(result)
    if champion is None:
        console.print("registry: no champion (no version passed the promotion gates)")
        title = f"version {result['version']} (pretrain, not champion)"
    elif stage:
        title = f"champion: version {champion} ({stage})"
    else:
        console.print(f"registry: the champion is version {champion}, from an earlier run; this run's pretrained model:")
        title = f"version {result['version']} (pretrain)"
    quality = Table(title=f"{title} on held-out episodes, PSNR dB per horizon step")
    quality.add_column("horizon")
    quality.add_column("model", justify="right")
    quality.add_column("copy-last-frame", justify="right")
    for step in range(len(metrics.get("psnr_per_step", []))):
        quality.add_row(
            str(step + 1), f"{metrics['psnr_per_step'][step]:.2f}", f"{metrics['baseline_psnr_per_step'][step]:.2f}"
        )
    quality.add_row("mean", f"{metrics['psnr_mean']:.2f}", f"{metrics['baseline_psnr_mean']:.2f}")
    console.print(quality)
    console.print(
        f"SSIM {metrics['ssim_mean']:.3f} (baseline {metrics['baseline_ssim_mean']:.3f}); "
        f"end-to-end {metrics['fps_e2e']:.1f} frames/s on {metrics['device']}"
    )
    uri = tracking.tracking_uri(project)
    console.print("\nwhere to look:")
    console.print(f"  MLflow UI:  mlflow ui --backend-store-uri {uri}   (run {result['mlflow_run_id']})")
    console.print(f"  report:     {metrics.get('report_dir', '')}  (report.json, psnr_vs_horizon.png, videos/)")
    console.print(f"  package:    {package}")
    console.print(f"  dataset:    {result['dataset']['path']}  (DVC md5 {result['dataset']['md5']})")
