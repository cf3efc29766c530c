"""The evaluation stage end to end: a real tiny world-model package, a real simulator dataset, a
real MLflow SQLite store; metrics.json, report files and the MLflow run checked."""

import json
from collections import OrderedDict
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from worldforge.core import tracking
from worldforge.data.samples import iter_episodes
from worldforge.evaluation import evaluate as evaluate_module
from worldforge.evaluation import evaluate_package
from worldforge.evaluation.evaluate import long_horizon_scores
from worldforge.evaluation.rollout_eval import EvaluationError, load_clips

REPORTED = {
    "psnr_mean",
    "psnr_per_step",
    "ssim_mean",
    "ssim_per_step",
    "baseline_psnr_mean",
    "baseline_psnr_per_step",
    "agent_position_error",
    "agent_found_fraction",
    "baseline_agent_position_error",
    "sharpness_mean",
    "sharpness_per_step",
    "baseline_sharpness_mean",
    "baseline_sharpness_per_step",
    "psnr_gain_over_baseline",
    "beats_baseline",
    "parameters",
    "flops_per_frame",
    "fps_denoise",
    "fps_e2e",
    "latency_ms_median",
    "latency_ms_p95",
    "peak_memory_mb",
    "device",
    "package_md5",
}


def copy_last_psnr_by_hand(dataset, context: int, horizon: int, episodes: int) -> list[float]:
    """Mean over episodes of 10 log10(255^2 / MSE) between each target frame and the last context
    frame, straight from the uint8 frames, each frame's value clipped at the PSNR of 8-bit rounding
    noise, 10 log10(12 * 255^2): the baseline, computed without worldforge's metrics."""
    values = []
    for episode in list(iter_episodes(dataset, "test"))[:episodes]:
        frames = episode.frames.astype(np.float64)
        last = frames[context - 1]
        mse = ((frames[context : context + horizon] - last) ** 2).mean(axis=(1, 2, 3))
        with np.errstate(divide="ignore"):
            values.append(np.minimum(10 * np.log10(255.0**2 / mse), 10 * np.log10(12 * 255.0**2)))
    return list(np.mean(values, axis=0))


def test_evaluation_writes_metrics_report_and_mlflow_run(
    tracked_project, sim_dataset, make_package, small_eval
):
    package = make_package("model")
    result = evaluate_package(package, sim_dataset, small_eval, experiment="eval-test")

    assert REPORTED <= set(result)
    assert len(result["psnr_per_step"]) == small_eval.horizon
    assert result["episodes"] == 2
    assert result["agent_found_fraction"] >= 0  # simulator data: action-following measured
    # the baseline is the copy-last-frame PSNR computed by hand from the dataset's uint8 frames
    assert result["baseline_psnr_per_step"] == pytest.approx(
        copy_last_psnr_by_hand(sim_dataset, small_eval.context_frames, small_eval.horizon, 2), rel=1e-5
    )
    assert result["psnr_gain_over_baseline"] == pytest.approx(
        result["psnr_mean"] - result["baseline_psnr_mean"]
    )
    assert result["beats_baseline"] is False  # random weights have learned nothing
    assert result["fps_e2e"] > 0 and result["latency_ms_p95"] >= result["latency_ms_median"] > 0
    assert result["parameters"] > 0 and result["flops_per_frame"] > 0 and result["peak_memory_mb"] > 0

    written = json.loads((package / "metrics.json").read_text())
    assert written["psnr_mean"] == result["psnr_mean"]
    assert "report_dir" not in written

    report = tracked_project.reports / "eval" / "model"
    assert result["report_dir"] == str(report)
    summary = json.loads((report / "report.json").read_text())
    assert summary["model"]["metrics"]["psnr_per_step"] == result["psnr_per_step"]
    assert Image.open(report / "psnr_vs_horizon.png").format == "PNG"
    assert Image.open(report / "sharpness_vs_horizon.png").format == "PNG"
    assert len(result["sharpness_per_step"]) == small_eval.horizon
    assert not (report / "long_horizon.png").exists()  # eval.long_horizon unset: no long rollout
    gifs = sorted((report / "videos").glob("*.gif"))
    assert len(gifs) == 1  # eval.videos = 1
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == small_eval.context_frames + small_eval.horizon
        assert gif.width > 2 * gif.height  # ground truth | prediction, side by side

    client = mlflow.MlflowClient(tracking.tracking_uri(tracked_project))
    experiment = client.get_experiment_by_name("eval-test")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["stage"] == "evaluate"
    assert run.data.tags["package.md5"] == result["package_md5"]
    assert run.data.metrics["psnr_mean"] == pytest.approx(result["psnr_mean"])
    assert run.data.metrics["baseline_psnr_mean"] == pytest.approx(result["baseline_psnr_mean"])
    history = client.get_metric_history(run.info.run_id, "psnr_by_step")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx(result["psnr_per_step"])
    assert run.data.metrics["sharpness_mean"] == pytest.approx(result["sharpness_mean"])
    # action sensitivity, on every dataset: the model's, and copy-last-frame's 0 (it ignores actions)
    assert len(result["action_sensitivity_db_per_step"]) == small_eval.horizon
    assert result["baseline_action_sensitivity_db_mean"] == 0.0
    assert written["action_sensitivity_db_h4"] == result["action_sensitivity_db_per_step"][3]
    assert run.data.metrics["action_sensitivity_db_mean"] == pytest.approx(result["action_sensitivity_db_mean"])
    assert len(client.get_metric_history(run.info.run_id, "action_sensitivity_db_by_step")) == 4
    assert "action sensitivity" in (report / "report.html").read_text()
    assert run.data.metrics["baseline_sharpness_mean"] == pytest.approx(result["baseline_sharpness_mean"])
    sharpness = client.get_metric_history(run.info.run_id, "sharpness_by_step")
    assert [m.value for m in sorted(sharpness, key=lambda m: m.step)] == pytest.approx(
        result["sharpness_per_step"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/report.json",
        "evaluation/psnr_vs_horizon.png",
        "evaluation/metrics.json",
    } <= artifacts


def test_reference_is_measured_in_the_same_run_with_the_same_noise(
    project, sim_dataset, make_package, small_eval
):
    model = make_package("model", seed=0)
    twin = make_package("twin", seed=0)  # the same weights in another folder
    other = make_package("other", seed=1)

    same = evaluate_package(model, sim_dataset, small_eval, reference=twin, track=False)
    assert same["comparison"]["psnr_mean"]["delta"] == 0.0  # same noise, same frames
    assert same["comparison"]["parameters"]["ratio"] == 1.0

    result = evaluate_package(model, sim_dataset, small_eval, reference=other, track=False)
    row = result["comparison"]["psnr_mean"]
    assert row["delta"] == pytest.approx(result["psnr_mean"] - result["reference"]["psnr_mean"])
    assert row["delta"] != 0.0
    speed = result["comparison"]["fps_e2e"]
    assert speed["ratio"] == pytest.approx(result["fps_e2e"] / result["reference"]["fps_e2e"])
    report = project.reports / "eval" / "model-vs-other"
    assert json.loads((report / "report.json").read_text())["reference"]["name"] == "other"
    [gif] = (report / "videos").glob("*.gif")
    assert "truth-model-reference" in gif.name


def test_a_parent_measured_earlier_in_the_process_is_not_rolled_out_again_as_a_reference(
    project, sim_dataset, make_package, small_eval, monkeypatch
):
    # What a pipeline does: the teacher is evaluated, then its student against it as the reference.
    monkeypatch.setattr(evaluate_module, "MEASURED", OrderedDict())
    measured = []
    real = evaluate_module.measure

    def counting(subject, *args, **kwargs):
        measured.append(subject.name)
        return real(subject, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "measure", counting)
    teacher, student = make_package("teacher", seed=0), make_package("student", seed=1)
    alone = evaluate_package(teacher, sim_dataset, small_eval, track=False)
    steps = json.loads((teacher / "config.json").read_text())["sampler"]["steps"]
    # the reference's steps given explicitly (as the distill stage does) resolve to the same key
    result = evaluate_package(student, sim_dataset, small_eval, reference=teacher, reference_steps=steps, track=False)
    assert measured == ["teacher", "student"]
    for key in ("psnr_mean", "ssim_mean", "sharpness_mean", "agent_position_error", "psnr_per_step"):
        assert result["reference"][key] == alone[key]
    assert result["reference"]["fps_e2e"] > 0  # the speed is measured again, in turns

    # other noise, or other steps: measured afresh
    evaluate_package(student, sim_dataset, small_eval.model_copy(update={"seed": 7}), reference=teacher, track=False)
    assert measured == ["teacher", "student", "student", "teacher"]
    evaluate_package(student, sim_dataset, small_eval, reference=teacher, reference_steps=steps + 1, track=False)
    assert measured[-1] == "teacher"


def test_a_model_built_for_other_frames_is_refused_naming_the_field(
    project, sim_dataset, tmp_path, small_eval
):
    from worldforge.models.config import ModelConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel, package_config
    from worldforge.packages import save_package

    model = WorldModel.from_config(TokenizerConfig(frame_size=(64, 64)), ModelConfig(num_actions=6))
    package = save_package(tmp_path / "big", package_config(model), model)
    with pytest.raises(
        EvaluationError, match=r"big/config.json: tokenizer.frame_size \(64, 64\).*manifest.json"
    ):
        evaluate_package(package, sim_dataset, small_eval, track=False)
    assert json.loads((package / "metrics.json").read_text()) == {}  # nothing written


def test_episodes_shorter_than_context_plus_horizon_are_refused(
    project, sim_dataset, make_package, small_eval
):
    config = small_eval.model_copy(update={"horizon": 20})
    with pytest.raises(EvaluationError, match="eval.context_frames \\+ eval.horizon = 22"):
        evaluate_package(make_package(), sim_dataset, config, track=False)


def test_a_registered_version_is_evaluated_by_its_models_uri(
    tracked_project, sim_dataset, make_package, small_eval
):
    from worldforge import registry

    package = make_package("registered")
    version = registry.register_package(package, "wf-eval", "pretrain").version
    result = evaluate_package(f"models:/wf-eval/{version}", sim_dataset, small_eval, track=False)
    assert result["report_dir"].endswith(f"wf-eval-v{version}")
    cached = tracked_project.packages / ".registry-cache" / "wf-eval" / str(version)
    assert json.loads((cached / "metrics.json").read_text())["psnr_mean"] == result["psnr_mean"]
    assert result["package_md5"] == registry.get_version("wf-eval", str(version)).tags["package.md5"]


def test_long_horizons_are_each_scored_on_one_rollout_against_copy_last(
    tracked_project, sim_dataset, make_package, small_eval
):
    config = small_eval.model_copy(update={"long_horizon": [10, 6, 14, 3], "videos": 0})  # 3 <= horizon 4
    result = evaluate_package(make_package(), sim_dataset, config, experiment="eval-long")

    assert result["long_horizon"] == 14 and result["long_horizons"] == [6, 10, 14]
    for key in ("psnr", "ssim", "sharpness", "agent_position_error"):  # this dataset's balls: none scored
        assert len(result[f"long_{key}_per_step"]) == 14
        assert len(result[f"long_baseline_{key}_per_step"]) == 14
    by_hand = copy_last_psnr_by_hand(sim_dataset, config.context_frames, 14, 2)
    assert result["long_baseline_psnr_per_step"] == pytest.approx(by_hand, rel=1e-5)
    for horizon in (6, 10, 14):
        assert result[f"psnr_h{horizon}"] == result["long_psnr_per_step"][horizon - 1]
        assert result[f"sharpness_h{horizon}"] == result["long_sharpness_per_step"][horizon - 1]
        assert result[f"long_h{horizon}_psnr_mean"] == pytest.approx(
            np.mean(result["long_psnr_per_step"][:horizon])
        )
        assert result[f"long_h{horizon}_baseline_psnr_mean"] == pytest.approx(
            np.mean(by_hand[:horizon]), rel=1e-5
        )
        for key in (
            "ssim_mean",
            "sharpness_mean",
            "baseline_sharpness_mean",
            "agent_position_error",
            "motion_ratio",
        ):
            assert f"long_h{horizon}_{key}" in result
    assert result["long_motion_ratio"] == result["long_h14_motion_ratio"]
    assert "psnr_h7" in result  # half the longest, as for a single horizon

    report = tracked_project.reports / "eval" / "model"
    assert Image.open(report / "long_horizon.png").format == "PNG"
    page = (report / "report.html").read_text()
    assert "Long horizons" in page and all(f"<tr><th>{h}</th>" in page for h in (6, 10, 14))

    client = mlflow.MlflowClient(tracking.tracking_uri(tracked_project))
    [run] = client.search_runs([client.get_experiment_by_name("eval-long").experiment_id])
    assert run.data.metrics["long_h10_psnr_mean"] == pytest.approx(result["long_h10_psnr_mean"])
    history = client.get_metric_history(run.info.run_id, "long_sharpness_by_step")
    assert sorted(m.step for m in history) == list(range(1, 15))


def test_a_single_long_horizon_keeps_its_metric_names(project, sim_dataset, make_package, small_eval):
    config = small_eval.model_copy(update={"long_horizon": 12, "videos": 0})
    result = evaluate_package(make_package(), sim_dataset, config, track=False)
    assert result["long_horizon"] == 12 and result["long_horizons"] == [12]
    assert len(result["long_psnr_per_step"]) == len(result["long_baseline_psnr_per_step"]) == 12
    for key in ("psnr", "baseline_psnr", "ssim", "agent_position_error", "baseline_agent_position_error"):
        assert {f"{key}_h6", f"{key}_h12"} <= set(result)
    assert result["long_motion_ratio"] >= 0


def test_episodes_shorter_than_the_longest_long_horizon_are_refused_naming_the_field(
    project, sim_dataset, make_package, small_eval
):
    config = small_eval.model_copy(update={"long_horizon": [8, 20]})  # 2 + 20 frames, episodes have 16
    with pytest.raises(EvaluationError, match="eval.context_frames \\+ eval.long_horizon = 22") as error:
        evaluate_package(make_package(), sim_dataset, config, track=False)
    assert str(sim_dataset) in str(error.value)


def test_long_horizon_takes_one_horizon_or_a_list_beyond_the_main_one():
    from pydantic import ValidationError

    from worldforge.evaluation.config import EvalConfig

    assert EvalConfig(horizon=8, long_horizon=32).long_horizons == [32]
    assert EvalConfig(horizon=8, long_horizon=[64, 16, 32, 16, 8]).long_horizons == [16, 32, 64]
    assert EvalConfig(horizon=8).long_horizons == EvalConfig(horizon=8, long_horizon=[4]).long_horizons == []
    with pytest.raises(ValidationError):
        EvalConfig(long_horizon=[16, 0])


def test_a_longest_horizon_the_tokenizer_cannot_generate_is_refused_naming_the_field(sim_dataset, small_eval):
    clips = load_clips(sim_dataset, small_eval, long_horizon=14)
    model = SimpleNamespace(frames_per_latent=4)  # a video tokenizer: 4 frames per latent frame
    with pytest.raises(EvaluationError, match="eval.long_horizon 14 .* multiple of 4"):
        long_horizon_scores(model, clips, small_eval, torch.device("cpu"))


def test_several_seeds_give_the_mean_of_each_seeds_quality(project, sim_dataset, make_package, small_eval):
    """eval.seeds 2: every quality number is the mean of seed 0's and seed 1's rollouts (the long
    rollout's too), what both agree on (the baseline) is as it was, and the gate's
    `beats_baseline` follows the mean."""
    package = make_package()
    config = small_eval.model_copy(update={"long_horizon": 8, "videos": 0})
    one, other = (
        evaluate_package(package, sim_dataset, config.model_copy(update={"seed": seed}), track=False)
        for seed in (0, 1)
    )
    both = evaluate_package(package, sim_dataset, config.model_copy(update={"seeds": 2}), track=False)
    assert one["psnr_mean"] != other["psnr_mean"]  # the seeds' noise differs
    assert both["seeds"] == 2 and "seeds" not in one
    for key in ("psnr_mean", "ssim_mean", "sharpness_mean", "agent_position_error", "long_h8_psnr_mean"):
        assert both[key] == pytest.approx((one[key] + other[key]) / 2), key
    assert both["psnr_per_step"] == pytest.approx(
        [(a + b) / 2 for a, b in zip(one["psnr_per_step"], other["psnr_per_step"], strict=True)]
    )
    assert both["baseline_psnr_mean"] == one["baseline_psnr_mean"] == other["baseline_psnr_mean"]
    assert both["psnr_gain_over_baseline"] == pytest.approx(both["psnr_mean"] - both["baseline_psnr_mean"])
    assert both["beats_baseline"] == (both["psnr_gain_over_baseline"] > 0)
