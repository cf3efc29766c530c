"""Prefect flows on a real (ephemeral) Prefect API: stage caching, retries, resume, validation.

Every run is the real pipeline at the `tiny` preset: a simulator dataset tracked in DVC, DeepSpeed
pretraining for a few steps, evaluation, registration and promotion in a SQLite MLflow store.
"""

from __future__ import annotations

import mlflow
import pytest
from prefect.testing.utilities import prefect_test_harness

from worldforge.platform import tracking
from worldforge.platform.config import ConfigError


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def flows(harness, project):
    from worldforge.pipelines import flows

    return flows


def run(flows, project, *overrides: str, **kwargs) -> dict:
    return flows.train_and_compress(preset="tiny", overrides=list(overrides), root=str(project.root), **kwargs)


def stage_runs(project, parent_run_id: str) -> dict[str, str]:
    client = mlflow.MlflowClient(tracking.tracking_uri(project))
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return {run.data.tags["stage"]: run.info.status for run in children}


def test_second_run_skips_every_stage_and_changed_config_reruns_what_follows(flows, project):
    first = run(flows, project)
    assert first["cached"] == {"build_dataset": False, "pretrain_world": False, "evaluate": False}
    assert first["decision"]["outcome"] == "promoted"
    assert set(stage_runs(project, first["mlflow_run_id"])) >= {"pretrain_world", "evaluate", "register"}

    second = run(flows, project)
    assert second["cached"] == {"build_dataset": True, "pretrain_world": True, "evaluate": True}
    assert second["world"] == first["world"]
    assert second["version"] == first["version"]  # the same package is not registered twice
    assert "pretrain_world" not in stage_runs(project, second["mlflow_run_id"])

    # A training change reruns training and what follows, not the dataset.
    third = run(flows, project, "train.lr=5e-4")
    assert third["cached"] == {"build_dataset": True, "pretrain_world": False, "evaluate": False}
    assert third["world"]["path"] != first["world"]["path"]
    assert third["version"] != first["version"]

    # A loader-only data change does not rebuild the shards (they would be byte-identical).
    fourth = run(flows, project, "train.lr=5e-4", "data.loader.shuffle_buffer=4")
    assert fourth["cached"]["build_dataset"] is True
    assert fourth["dataset"] == first["dataset"]


def test_missing_output_is_rebuilt_not_served_from_cache(flows, project):
    import shutil
    from pathlib import Path

    first = run(flows, project)
    shutil.rmtree(first["world"]["path"])
    again = run(flows, project)
    assert again["cached"]["pretrain_world"] is False
    assert Path(again["world"]["path"], "model.safetensors").is_file()


def test_transient_failure_is_retried(flows, project, monkeypatch):
    from worldforge.evaluation import evaluate as evaluate_module

    real = evaluate_module.evaluate_package
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("Connection refused: tracking server unreachable")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate_package", flaky)
    result = run(flows, project, "train.lr=7e-4", "eval.seed=1")
    assert len(calls) == 2
    assert result["metrics"]["psnr_mean"] > 0


def test_failed_stage_resumes_without_redoing_finished_stages(flows, project, monkeypatch):
    from prefect.exceptions import PrefectException

    from worldforge.evaluation import evaluate as evaluate_module

    real = evaluate_module.evaluate_package

    def broken(*args, **kwargs):
        raise ValueError("injected evaluation bug")

    monkeypatch.setattr(evaluate_module, "evaluate_package", broken)
    with pytest.raises((ValueError, PrefectException), match="injected evaluation bug"):
        run(flows, project, "train.lr=9e-4")

    monkeypatch.setattr(evaluate_module, "evaluate_package", real)
    resumed = run(flows, project, "train.lr=9e-4")
    assert resumed["cached"] == {"build_dataset": True, "pretrain_world": True, "evaluate": False}


def test_bad_parameters_fail_with_the_config_error(flows, project):
    with pytest.raises(ConfigError, match="train.lrr"):
        run(flows, project, "train.lrr=1")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        flows.train_and_compress(preset="nope", root=str(project.root))


def test_distill_stage_follows_pretraining_with_its_student_registered(flows, project):
    import json
    from pathlib import Path

    result = run(flows, project, "pipeline.compress=[distill]")

    (entry,) = result["compressed"]
    assert entry["stage"] == "distill" and entry["cached"] is False
    package = Path(entry["package"]["path"])
    assert json.loads((package / "config.json").read_text())["sampler"]["steps"] == 1
    lineage = json.loads((package / "lineage.json").read_text())
    assert lineage["parent"] == result["world"]["path"] and lineage["parent_md5"] == result["world"]["md5"]
    assert entry["metrics"]["reference"]["denoise_steps"] == 2  # evaluated against the 2-step teacher
    assert stage_runs(project, result["mlflow_run_id"])["distill"] == "FINISHED"
    version = mlflow.MlflowClient(tracking.tracking_uri(project)).get_model_version(
        "worldforge-sim-tiny-ci", entry["version"]
    )
    assert version.tags["stage"] == "distill" and version.tags["parent.model"] == result["world"]["md5"]
