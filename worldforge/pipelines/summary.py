"""What a person reads at the end of a pipeline run: where to look, and how the champion does."""

from __future__ import annotations

import math
from typing import Any

from worldforge.core import tracking
from worldforge.core.project import Project
from worldforge.evaluation.report import format_cell


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


def realism_gap(metrics: dict[str, Any], horizon: int = 8) -> float:
    """How many dB less like the simulator's own frames the model's are than the recorded ones at
    step `horizon` (what the realism gate reads); NaN without realism metrics."""
    truth, mine = (metrics.get(f"{who}realism_psnr_h{horizon}", math.nan) for who in ("truth_", ""))
    return truth - mine


def position_error(metrics: dict[str, Any], key: str) -> str:
    """"0.029 (0.36x)": the error and its ratio to copy-last-frame's on the same episodes."""
    mine, baseline = metrics.get(key), metrics.get(f"baseline_{key}")
    if mine is None:
        return "-"
    return f"{mine:.3f} ({mine / baseline:.2f}x)" if baseline else f"{mine:.3f}"


def print_summary(result: dict[str, Any]) -> None:
    """Print the stages (ran or cached), every promotion decision, the champion against
    copy-last-frame, and where the MLflow UI, the reports (plot, videos) and the packages are."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=140)
    project = Project.current()
    stages = Table(title="train_and_compress")
    stages.add_column("stage")
    stages.add_column("result")
    for stage, cached in result["cached"].items():
        stages.add_row(stage, "cached (inputs unchanged)" if cached else "ran")
    console.print(stages)

    versions = Table(
        title="registered versions: held-out episodes; compression stages against their parent",
        caption="steps: sampling steps per frame; sharp: sharpness (1 = as sharp as the truth); realism: "
        "realism gap at step 8 (dB below the recorded frames'); actions: action sensitivity (dB a rollout "
        "under the recorded actions beats one under another episode's; 0 = ignores them); errors: agent / ball position error "
        "(x: of copy-last-frame's); fps: frames/s end to end",
    )
    columns = ("stage", "v", "steps", "PSNR", "vs parent", "vs copy", "sharp", "realism", "actions", "agent error",
               "ball error", "fps", "params")
    for column in columns:
        versions.add_column(column, no_wrap=True)
    rows = [{"stage": "pretrain", "version": result["version"], "metrics": result["metrics"],
             "decision": result.get("decision", {})}, *result.get("compressed", [])]
    outcomes = []
    for entry in rows:
        own = entry["metrics"]
        delta = own.get("comparison", {}).get("psnr_mean", {}).get("delta")
        decision = entry.get("decision") or {}
        outcome = decision.get("outcome", "not offered")
        if decision.get("failed_checks"):
            outcome += f": {', '.join(decision['failed_checks'])}"
        outcomes.append(f"  v{entry['version']} {entry['stage']}: {outcome}")
        versions.add_row(
            entry["stage"],
            str(entry["version"]),
            format_cell(own.get("denoise_steps"), "{:.0f}"),
            format_cell(own.get("psnr_mean"), "{:.2f}"),
            format_cell(delta, "{:+.2f}"),
            format_cell(own.get("psnr_mean", math.nan) - own.get("baseline_psnr_mean", math.nan), "{:+.2f}"),
            format_cell(own.get("sharpness_mean"), "{:.2f}"),
            format_cell(realism_gap(own), "{:.1f}"),
            format_cell(own.get("action_sensitivity_db_mean"), "{:+.2f}"),
            position_error(own, "agent_position_error"),
            position_error(own, "object_position_error"),
            format_cell(own.get("fps_e2e"), "{:.1f}"),
            format_cell(own.get("parameters", math.nan) / 1e6, "{:.2f}M"),
        )
    console.print(versions)
    console.print("promotion decisions:")
    for line in outcomes:
        console.print(line, highlight=False)

    champion, stage, metrics, package = champion_of(result)
    if champion is None:
        console.print("registry: no champion (no version passed the promotion gates)")
        title = f"version {result['version']} (pretrain, not champion)"
    elif stage:
        title = f"champion: version {champion} ({stage})"
    else:
        console.print(f"registry: the champion is version {champion}, from an earlier run; this run's pretrained model:")
        title = f"version {result['version']} (pretrain)"
    quality = Table(title=f"{title} on held-out episodes, per horizon step (copy-last-frame in brackets)")
    curves = [("PSNR dB", "psnr", "{:.2f}"), ("agent error", "agent_position_error", "{:.3f}"),
              ("ball error", "object_position_error", "{:.3f}"),
              ("action sensitivity dB", "action_sensitivity_db", "{:+.2f}")]
    curves = [curve for curve in curves if f"{curve[1]}_per_step" in metrics]
    quality.add_column("horizon")
    for label, _, _ in curves:
        quality.add_column(label, justify="right")

    def cell(key: str, fmt: str, step: int | None) -> str:
        mine = metrics[f"{key}_per_step"][step] if step is not None else metrics.get(f"{key}_mean", metrics.get(key))
        base = (metrics[f"baseline_{key}_per_step"][step] if step is not None
                else metrics.get(f"baseline_{key}_mean", metrics.get(f"baseline_{key}")))
        return f"{fmt.format(mine)} ({fmt.format(base)})" if mine is not None and base is not None else "-"

    for step in range(len(metrics.get("psnr_per_step", []))):
        quality.add_row(str(step + 1), *(cell(key, fmt, step) for _, key, fmt in curves))
    quality.add_row("mean", *(cell(key, fmt, None) for _, key, fmt in curves))
    console.print(quality)
    console.print(
        f"SSIM {format_cell(metrics.get('ssim_mean'), '{:.3f}')} "
        f"(baseline {format_cell(metrics.get('baseline_ssim_mean'), '{:.3f}')}); "
        f"sharpness {format_cell(metrics.get('sharpness_mean'), '{:.2f}')} (1 = as sharp as the truth); "
        f"realism gap at step 8 {format_cell(realism_gap(metrics), '{:.1f}')} dB; "
        f"action sensitivity {format_cell(metrics.get('action_sensitivity_db_mean'), '{:+.2f}')} dB; "
        f"agent position error {position_error(metrics, 'agent_position_error')}, "
        f"ball position error {position_error(metrics, 'object_position_error')} (x: of copy-last-frame's); "
        f"end-to-end {format_cell(metrics.get('fps_e2e'), '{:.1f}')} frames/s on {metrics.get('device', '-')}"
    )
    uri = tracking.tracking_uri(project)
    console.print("\nwhere to look:")
    console.print(f"  MLflow UI:  mlflow ui --backend-store-uri {uri}   (run {result['mlflow_run_id']})")
    console.print(
        f"  report:     {metrics.get('report_dir', '')}/report.html  (one page: tables, plots, videos; "
        "also report.json, *.png, videos/)"
    )
    console.print(f"  package:    {package}")
    console.print(f"  dataset:    {result['dataset']['path']}  (DVC md5 {result['dataset']['md5']})")
