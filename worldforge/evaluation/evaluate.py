"""The evaluation stage: a model package (and optionally a reference) in, metrics out.

    evaluate_package(package, dataset, config) -> metrics

Quality (PSNR, SSIM and sharpness per horizon step, the copy-last-frame baseline, action
sensitivity (`sensitivity.py`, on every dataset), action-following, realism and object survival on
the simulator) and cost (parameters, FLOPs, frames/s, latency, peak memory on the current device)
of each model, measured in one run on the same held-out clips with the same noise. Writes the model's `metrics.json` into its package, a report folder (report.json, plots,
videos, report.html), and, with `track`, an MLflow stage run `evaluate` holding the metrics and the
report. With `eval.long_horizon` (one horizon or several), one longer rollout (beyond the training
clip, through the sliding KV window) is scored at each of them (`long_horizon_scores`). On simulator
data the model also plays `eval.play_frames` frames past held-out episodes, scored against the
simulator's own continuation (`long_play.py`, the model only: not its reference).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldforge.core import tracking
from worldforge.core.lineage import tracked_md5
from worldforge.core.project import Project
from worldforge.core.runtime import select_device
from worldforge.data.manifest import MANIFEST
from worldforge.evaluation import page, report
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.cost import measure_cost, measure_costs
from worldforge.evaluation.long_play import PlayClips, load_play, play, score_play, write_strip
from worldforge.evaluation.rollout_eval import (
    EvalClips,
    EvaluationError,
    baseline_scores,
    check_compatible,
    detector_floor,
    load_clips,
    predict,
    prefix_scores,
    score,
)
from worldforge.evaluation.sensitivity import model_sensitivity
from worldforge.packages import ModelPackage, load_package, package_md5, write_metrics
from worldforge.packages.lineage import project_path
from worldforge.registry import resolve, resolve_version

log = logging.getLogger(__name__)


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
        version = resolve_version(text)
        uri = f"models:/{version.name}/{version.version}"
        return Subject(text, f"{version.name}-v{version.version}", load_package(resolve(uri)))
    path = Path(source).resolve()
    return Subject(str(path), path.name, load_package(path))


# the per-step curves recorded for people, MLflow and the long rollout, each with its `baseline_` twin
CURVES = (
    "psnr",
    "ssim",
    "sharpness",
    "agent_position_error",
    "object_position_error",
    "realism_psnr",
    "object_survival",
    "action_sensitivity_db",
)
# the recorded frames' own curves (`detector_floor`): the most realism and survival can score
TRUTH_CURVES = ("truth_realism_psnr", "truth_object_survival")
# steps at which realism and survival are also read off their curves (`realism_psnr_h8`, ...),
# from the main rollout up to eval.horizon and from the long one beyond it
REALISM_STEPS = (8, 16, 32)
REALISM_CURVES = (
    "realism_psnr",
    "baseline_realism_psnr",
    "truth_realism_psnr",
    "object_survival",
    "baseline_object_survival",
)


def at_steps(metrics: dict[str, Any], steps: tuple[int, ...], prefix: str = "") -> dict[str, float]:
    """`{curve}_h{H}` for each realism curve (`REALISM_CURVES`) of `metrics` (its
    `{prefix}{curve}_per_step`) at each step H of `steps` the curve reaches."""
    values = {}
    for key in REALISM_CURVES:
        curve = metrics.get(f"{prefix}{key}_per_step") or []
        values.update({f"{key}_h{step}": curve[step - 1] for step in steps if step <= len(curve)})
    return values


def long_horizon_scores(model, clips: EvalClips, config: EvalConfig, device: torch.device) -> dict[str, Any]:
    """One rollout of `clips.horizon` frames (the longest of `eval.long_horizon`), beyond the
    training clip, scored on its prefix at each horizon H of `config.long_horizons` (and at its
    full length), against copy-last-frame on the same clips:

    - `long_horizon`: the longest; `long_horizons`: every scored H
    - `long_{curve}_per_step`, `long_baseline_{curve}_per_step`: the full rollout's curves (PSNR,
      SSIM, sharpness, agent/ball error, realism, object survival), and the recorded frames'
      realism and survival (`long_truth_realism_psnr_per_step`, `long_truth_object_survival_per_step`)
    - `{curve}_h{step}`, `baseline_{curve}_h{step}`: a curve's value at half the longest and at
      each H (`psnr_h16`, `baseline_psnr_h16`, `sharpness_h32`, `realism_psnr_h32`,
      `truth_realism_psnr_h32`, ...)
    - `long_h{H}_{scalar}`: each scalar of H's scores, over steps 1..H (`long_h32_psnr_mean`,
      `long_h32_baseline_psnr_mean`, `long_h32_agent_position_error`, `long_h32_sharpness_mean`,
      `long_h32_motion_ratio`, ...)
    - `long_motion_ratio`: the full rollout's second half moving as the world does (~1), frozen (0)
      or dissolved into noise (>> 1)."""
    r = model.frames_per_latent
    if clips.horizon % r:
        raise EvaluationError(
            f"eval.long_horizon {clips.horizon} (the longest) must be a multiple of {r}: the tokenizer "
            f"compresses {r} frames into one latent frame"
        )
    prediction = predict(model, clips, config.model_copy(update={"horizon": clips.horizon}), device)
    horizons = sorted({h for h in config.long_horizons if h < clips.horizon} | {clips.horizon})
    entries = prefix_scores(prediction, clips, horizons)
    full = {**entries[clips.horizon], **detector_floor(clips)}
    long: dict[str, Any] = {
        "long_horizon": clips.horizon,
        "long_horizons": horizons,
        "long_motion_ratio": full["motion_ratio"],
    }
    for key in (*CURVES, *(f"baseline_{curve}" for curve in CURVES), *TRUTH_CURVES):
        curve = full.get(f"{key}_per_step")
        if curve is None:
            continue
        long[f"long_{key}_per_step"] = curve
        for step in sorted({max(1, clips.horizon // 2), *horizons}):
            long[f"{key}_h{step}"] = curve[step - 1]
    for horizon, entry in entries.items():
        long.update(
            {f"long_h{horizon}_{key}": value for key, value in entry.items() if not isinstance(value, list)}
        )
    long.update(at_steps(long, REALISM_STEPS, prefix="long_"))
    return long


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of several seeds' rollouts as one: each number the mean of its seeds' (a list of
    numbers, step by step; NaN where no seed has a value), what every seed agrees on as it is (the
    horizons, the baseline's and the truth's scores), and `seeds` how many there were."""
    if len(runs) == 1:
        return runs[0]

    def mean(values: list) -> Any:
        first = values[0]
        if all(value == first for value in values[1:]):
            return first
        if isinstance(first, bool) or not all(isinstance(v, (int, float, list)) for v in values):
            return first
        if isinstance(first, list):
            return [mean([value[index] for value in values]) for index in range(len(first))]
        finite = [float(v) for v in values if not math.isnan(float(v))]
        return sum(finite) / len(finite) if finite else math.nan

    merged = {key: mean([run[key] for run in runs if key in run]) for key in runs[0]}
    merged["seeds"] = len(runs)
    return merged


def measure(
    subject: Subject,
    clips: EvalClips,
    config: EvalConfig,
    device: torch.device,
    cost: bool = True,
    long_clips: EvalClips | None = None,
) -> tuple[dict, torch.Tensor]:
    """Quality and (with `cost`) cost of one model on `clips` (and the long rollouts of
    `long_clips`): (metrics, its predictions (N, horizon, C, H, W), those of `eval.seed`). Realism
    and survival are also read at steps 8, 16 and 32 (`at_steps`: from the main rollout where it
    reaches them). With `eval.seeds` > 1 the quality is the mean over that many seeds
    (`mean_over_seeds`)."""
    model = subject.package.build(device)
    check_compatible(model, clips, config, str(subject.package.path))
    runs, predictions = [], []
    for offset in range(config.seeds):
        seeded = config.model_copy(update={"seed": config.seed + offset})
        prediction = predict(model, clips, seeded, device)
        metrics = score(prediction, clips)
        metrics.update(model_sensitivity(model, clips, seeded, device, prediction))
        if long_clips is not None:
            metrics.update(long_horizon_scores(model, long_clips, seeded, device))
        runs.append(metrics)
        predictions.append(prediction)
    metrics, prediction = mean_over_seeds(runs), predictions[0]
    metrics.update(baseline_scores(clips))  # the same for every seed: scored once
    metrics.update(detector_floor(clips))
    metrics["psnr_gain_over_baseline"] = metrics["psnr_mean"] - metrics["baseline_psnr_mean"]
    metrics["beats_baseline"] = metrics["psnr_gain_over_baseline"] > 0
    metrics.update(at_steps(metrics, REALISM_STEPS))
    if cost:
        metrics.update(measure_cost(model, clips, config, device))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return report.without_nan(metrics), prediction


# A pipeline evaluates each stage's model against its parent, which the stage before evaluated in
# the same process on the same clips with the same seeded noise: those quality measurements are
# reused rather than rolled out again (a teacher's 4-step rollouts are most of a 1-step student's
# evaluation). Keyed by what determines them; the speed is always measured afresh, in turns.
MEASURED: OrderedDict[tuple, tuple[dict, torch.Tensor]] = OrderedDict()
MEASURED_KEEP = 2


def measured_key(
    md5: str, package: ModelPackage, dataset: Path, config: EvalConfig, device: torch.device
) -> tuple | None:
    """What one model's quality on a dataset depends on: its weights and config (`package_md5`),
    the dataset's manifest (it holds every shard's sha256), the evaluation config with its steps
    resolved, and the device. None (never reused) for a folder without a manifest."""
    manifest = dataset / MANIFEST
    if not manifest.is_file():
        return None
    steps = config.denoise_steps or package.config.get("sampler", {}).get("steps")
    resolved = config.model_copy(update={"denoise_steps": steps})
    shards = hashlib.md5(manifest.read_bytes()).hexdigest()
    return (md5, str(dataset), shards, resolved.model_dump_json(), str(device))


def remember_measured(key: tuple | None, metrics: dict, prediction: torch.Tensor) -> None:
    if key is None:
        return
    MEASURED[key] = copy.deepcopy((metrics, prediction))
    while len(MEASURED) > MEASURED_KEEP:
        MEASURED.popitem(last=False)


def long_play_scores(
    subject: Subject, clips: PlayClips, config: EvalConfig, device: torch.device
) -> tuple[dict[str, Any], torch.Tensor]:
    """One model's long plays (`long_play.py`) and their scores, with `play_seconds` (the rollout's
    wall time) and `play_episodes` / `play_frames`: (metrics, its plays (N, F, C, H, W))."""
    model = subject.package.build(device)
    start = time.perf_counter()
    prediction = play(model, clips, config, device)
    seconds = time.perf_counter() - start
    del model
    scores = score_play(prediction, clips)
    scores.update(
        {"play_seconds": seconds, "play_episodes": len(clips.episodes), "play_frames": clips.frames}
    )
    return report.without_nan(scores), prediction


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
    config = config or EvalConfig()
    device = select_device(config.device)
    dataset = Path(dataset).resolve()
    clips = load_clips(dataset, config)
    long_clips = None
    if config.long_horizons:
        long_clips = load_clips(dataset, config, long_horizon=config.long_horizons[-1])
    play_clips = load_play(dataset, config)
    subjects = [open_subject(package)] + ([open_subject(reference)] if reference is not None else [])
    name = "-vs-".join(s.name for s in subjects)
    out = Path(out_dir) if out_dir is not None else Project.current().reports / "eval" / name

    context = {
        "dataset": project_path(dataset),  # relative to the project root, as in lineage.json
        "dataset_md5": tracked_md5(dataset),
        "split": config.split,
        "episodes": len(clips.episodes),
        "context_frames": config.context_frames,
        "horizon": clips.horizon,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results, predictions = [], {}
    steps = [config.denoise_steps] + (
        [reference_steps or config.denoise_steps] if reference is not None else []
    )
    for subject, chosen in zip(subjects, steps, strict=True):
        chosen_config = config.model_copy(update={"denoise_steps": chosen})
        md5 = package_md5(subject.package.path)
        key = measured_key(md5, subject.package, dataset, chosen_config, device)
        if key is not None and key in MEASURED:
            metrics, prediction = copy.deepcopy(MEASURED[key])
            log.info("%s: quality as measured earlier in this process (same weights, data and noise)", subject.name)
        else:
            metrics, prediction = measure(
                subject, clips, chosen_config, device, cost=False, long_clips=long_clips
            )
            remember_measured(key, metrics, prediction)
        results.append({**metrics, **context, "package_md5": md5})
        predictions["model" if not predictions else "reference"] = prediction
    plays = None
    if play_clips is not None:
        scores, plays = long_play_scores(subjects[0], play_clips, config, device)
        results[0].update(scores)
    # Speed of the model and its reference timed in turns, so their ratio is fair on a busy machine.
    models = [subject.package.build(device) for subject in subjects]
    for metrics, cost in zip(results, measure_costs(models, clips, config, device, steps), strict=True):
        metrics.update(report.without_nan(cost))
    del models
    own = results[0]
    if reference is not None:
        # What the gates compare a compression stage with: its parent, on the same episodes.
        own["reference_source"] = project_path(subjects[1].source)
        realism = [f"realism_psnr_h{step}" for step in REALISM_STEPS]
        for key in ("psnr_mean", "agent_position_error", "object_position_error", "sharpness_mean", *realism):
            if key in results[1]:
                own[f"reference_{key}"] = results[1][key]
    write_metrics(subjects[0].package.path, own)

    summary: dict[str, Any] = {
        "model": {"source": subjects[0].source, "name": subjects[0].name, "metrics": own}
    }
    curves = {
        subjects[0].name: own["psnr_per_step"],
        "copy last frame (baseline)": own["baseline_psnr_per_step"],
    }
    models = {subjects[0].name: own}
    if reference is not None:
        summary["reference"] = {"source": subjects[1].source, "name": subjects[1].name, "metrics": results[1]}
        summary["comparison"] = report.compare(own, results[1])
        curves[f"{subjects[1].name} (reference)"] = results[1]["psnr_per_step"]
        models[f"{subjects[1].name} (reference)"] = results[1]
    summary["config"] = config.model_dump(mode="json")
    report.write_json(out / "report.json", summary)
    where = f"{dataset.name}/{config.split}"
    report.plot_curves(out / "psnr_vs_horizon.png", curves, f"PSNR vs horizon on {where}")
    errors = position_error_curves(subjects, results)
    if errors:
        report.plot_curves(
            out / "position_error_vs_horizon.png",
            errors,
            f"agent / ball position error vs horizon on {where}",
            ylabel="position error (frame sides)",
        )
    report.plot_models(
        out / "sharpness_vs_horizon.png", models, f"sharpness vs horizon on {where}", metrics=("sharpness",)
    )
    if long_clips is not None:
        report.plot_models(
            out / "long_horizon.png",
            models,
            f"a {long_clips.horizon}-frame rollout on {where}",
            prefix="long_",
            marks=own["long_horizons"],
        )
    if plays is not None:
        write_strip(out / "play" / "play_strip.png", play_clips, plays)
    report.write_videos(out / "videos", clips, predictions, config.videos)
    page.write_html(out, summary)

    result = {**own, "report_dir": str(out)}
    if reference is not None:
        result["reference"] = results[1]
        result["comparison"] = summary["comparison"]
    if track:
        _track(summary, subjects, out, config, experiment)
    return result


def position_error_curves(subjects: list[Subject], results: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The agent and ball position error per horizon step of each model, copy-last-frame's and the
    detectors' floor (their error on the recorded frames), for the error plot; {} without state."""
    own, curves = results[0], {}
    for what, metric in (("agent", "agent_position_error"), ("ball", "object_position_error")):
        if f"{metric}_per_step" not in own:
            continue
        for subject, model_metrics in zip(subjects, results):
            curves[f"{subject.name} {what}"] = model_metrics.get(f"{metric}_per_step", [])
        curves[f"copy last frame {what} (baseline)"] = own[f"baseline_{metric}_per_step"]
        floor = own.get(f"{metric}_ground_truth")
        if floor is not None:
            curves[f"detector floor {what}"] = [floor] * len(own[f"{metric}_per_step"])
    return curves


def _track(
    summary: dict[str, Any], subjects: list[Subject], out: Path, config: EvalConfig, experiment: str
) -> None:
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
        keys = (*CURVES, *(f"baseline_{curve}" for curve in CURVES), *TRUTH_CURVES)
        # one call per step: curves in MLflow's step charts (`psnr_by_step`, `long_psnr_by_step`, ...)
        for prefix, length in (("", own["horizon"]), ("long_", own.get("long_horizon", 0))):
            for step in range(length):
                values = {
                    f"{prefix}{key}_by_step": own[f"{prefix}{key}_per_step"][step]
                    for key in keys
                    if f"{prefix}{key}_per_step" in own
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
