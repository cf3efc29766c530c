"""The evaluation stage: a model package (and optionally a reference) in, metrics out.

    evaluate_package(package, dataset, config) -> metrics

Quality (PSNR and SSIM per horizon step, the copy-last-frame baseline, action-following on the
simulator) and cost (parameters, FLOPs, frames/s, latency, peak memory on the current device)
of each model, measured in one run on the same held-out clips with the same noise. Writes the
model's `metrics.json` into its package, a report folder (report.json, PSNR plot, videos), and,
with `track`, an MLflow stage run `evaluate` holding the metrics and the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldforge.evaluation import report
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.cost import measure_cost, measure_costs
from worldforge.evaluation.rollout_eval import (
    EvalClips,
    baseline_scores,
    check_compatible,
    detector_floor,
    load_clips,
    predict,
    score,
)
from worldforge.platform.lineage import tracked_md5
from worldforge.platform.packages import ModelPackage, load_package, package_md5, write_metrics


@dataclass
class Subject:
    """A model under evaluation: where it came from, its package, a short name for files."""

    source: str  # the folder or models:/ URI given
    name: str  # e.g. worldforge-sim-tiny-v3 or the package folder's name
    package: ModelPackage


def open_subject(source: str | Path) -> Subject:
    """Load a package folder or `models:/name@alias` / `models:/name/version` (downloaded once)."""
    text = str(source)
    if text.startswith("models:/"):
        from worldforge.platform.registry import resolve_version

        version = resolve_version(text)
        uri = f"models:/{version.name}/{version.version}"
        return Subject(text, f"{version.name}-v{version.version}", load_package(uri))
    path = Path(source).resolve()
    return Subject(str(path), path.name, load_package(path))




def measure(
    subject: Subject, clips: EvalClips, config: EvalConfig, device: torch.device, cost: bool = True
) -> tuple[dict, torch.Tensor]:
    """Quality and (with `cost`) cost of one model on `clips`: (metrics, its predictions
    (N, horizon, C, H, W))."""
    model = subject.package.build(device)
    check_compatible(model, clips, config, str(subject.package.path))
    prediction = predict(model, clips, config, device)
    metrics = score(prediction, clips)
    metrics.update(baseline_scores(clips))
    metrics.update(detector_floor(clips))
    metrics["psnr_gain_over_baseline"] = metrics["psnr_mean"] - metrics["baseline_psnr_mean"]
    metrics["beats_baseline"] = metrics["psnr_gain_over_baseline"] > 0
    if cost:
        metrics.update(measure_cost(model, clips, config, device))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return report.without_nan(metrics), prediction


def evaluate_package(
    package: str | Path,
    dataset: str | Path,
    config: EvalConfig | None = None,
    reference: str | Path | None = None,
    out_dir: str | Path | None = None,
    track: bool = True,
    experiment: str = "worldforge",
    reference_steps: int | None = None,
) -> dict[str, Any]:
    """Evaluate `package` (a folder or `models:/` URI) on `dataset`'s held-out split.

    Returns the model's metrics (as written to its `metrics.json`) plus `report_dir` and, with a
    `reference`, `reference` (its metrics) and `comparison` (metric -> model, reference, delta,
    ratio); `reference_steps` rolls the reference out with that many solver steps (default: as
    the model, `config.denoise_steps` or its package's `sampler.steps`), e.g. a teacher at the step
    count a student was distilled from. `out_dir` defaults to `<root>/reports/eval/<name>[-vs-<reference>]`. With `track`,
    a stage run `evaluate` in `experiment` (nested under the active run, if any) records it all.
    Raises EvaluationError / PackageError / DatasetError naming the file and field at fault."""
    from worldforge.platform.project import Project
    from worldforge.platform.runtime import select_device

    config = config or EvalConfig()
    device = select_device(config.device)
    dataset = Path(dataset).resolve()
    clips = load_clips(dataset, config)
    subjects = [open_subject(package)] + ([open_subject(reference)] if reference is not None else [])
    name = "-vs-".join(s.name for s in subjects)
    out = Path(out_dir) if out_dir is not None else Project.current().reports / "eval" / name

    context = {
        "dataset": str(dataset),
        "dataset_md5": tracked_md5(dataset),
        "split": config.split,
        "episodes": len(clips.episodes),
        "context_frames": config.context_frames,
        "horizon": clips.horizon,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results, predictions = [], {}
    steps = [config.denoise_steps] + ([reference_steps or config.denoise_steps] if reference is not None else [])
    for subject, chosen in zip(subjects, steps, strict=True):
        chosen_config = config.model_copy(update={"denoise_steps": chosen})
        metrics, prediction = measure(subject, clips, chosen_config, device, cost=False)
        results.append({**metrics, **context, "package_md5": package_md5(subject.package.path)})
        predictions["model" if not predictions else "reference"] = prediction
    # Speed of the model and its reference timed in turns, so their ratio is fair on a busy machine.
    models = [subject.package.build(device) for subject in subjects]
    for metrics, cost in zip(results, measure_costs(models, clips, config, device, steps), strict=True):
        metrics.update(report.without_nan(cost))
    del models
    own = results[0]
    write_metrics(subjects[0].package.path, own)

    summary: dict[str, Any] = {
        "model": {"source": subjects[0].source, "name": subjects[0].name, "metrics": own}
    }
    curves = {
        subjects[0].name: own["psnr_per_step"],
        "copy last frame (baseline)": own["baseline_psnr_per_step"],
    }
    if reference is not None:
        summary["reference"] = {"source": subjects[1].source, "name": subjects[1].name, "metrics": results[1]}
        summary["comparison"] = report.compare(own, results[1])
        curves[f"{subjects[1].name} (reference)"] = results[1]["psnr_per_step"]
    summary["config"] = config.model_dump(mode="json")
    report.write_json(out / "report.json", summary)
    report.plot_psnr(out / "psnr_vs_horizon.png", curves, f"PSNR vs horizon on {dataset.name}/{config.split}")
    report.write_videos(out / "videos", clips, predictions, config.videos)

    result = {**own, "report_dir": str(out)}
    if reference is not None:
        result["reference"] = results[1]
        result["comparison"] = summary["comparison"]
    if track:
        _track(summary, subjects, out, config, experiment)
    return result


def _track(
    summary: dict[str, Any], subjects: list[Subject], out: Path, config: EvalConfig, experiment: str
) -> None:
    from worldforge.platform import tracking

    own = summary["model"]["metrics"]
    params = {f"eval.{key}": value for key, value in config.model_dump(mode="json").items()}
    params.update({"model": subjects[0].source, "dataset": own["dataset"]})
    tags = {
        "package.md5": own["package_md5"],
        "parent.model": subjects[0].source,
        "eval.device": own["device"],
    }
    if own["dataset_md5"]:
        tags["dataset.dvc_md5"] = own["dataset_md5"]
    if len(subjects) > 1:
        params["reference"] = subjects[1].source
    with tracking.stage_run("evaluate", experiment, params=params, tags=tags):
        tracking.log_metrics(report.scalar_metrics(own))
        curves = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "agent_position_error")
        for step in range(own["horizon"]):  # one call per step: curves in MLflow's step charts
            values = {
                f"{key}_by_step": own[f"{key}_per_step"][step] for key in curves if f"{key}_per_step" in own
            }
            tracking.log_metrics(report.scalar_metrics(values), step=step + 1)
        if "reference" in summary:
            theirs = report.scalar_metrics(summary["reference"]["metrics"])
            tracking.log_metrics({f"reference.{key}": value for key, value in theirs.items()})
            compared = {}
            for key, row in summary["comparison"].items():
                compared.update({f"delta.{key}": row["delta"], f"ratio.{key}": row["ratio"]})
            tracking.log_metrics(report.scalar_metrics(compared))
        tracking.set_tags({"beats_baseline": own["beats_baseline"]})
        tracking.log_artifacts(out, artifact_path="evaluation")
        tracking.log_artifacts(subjects[0].package.path / "metrics.json", artifact_path="evaluation")
