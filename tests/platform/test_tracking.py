"""Tracking: a parent run with nested stage runs, params/metrics/tags/artifacts, read back with
MlflowClient from a real SQLite store under the project root."""

import mlflow

from worldforge.config import load_config
from worldforge.core import tracking


def test_embedded_store_lives_under_project_root(project):
    assert tracking.tracking_uri(project) == f"sqlite:///{project.root / 'mlflow.db'}"


def test_env_uri_overrides_embedded_default(project, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    assert tracking.tracking_uri(project).endswith("other.db")


def test_nested_stage_runs_are_readable_back(project, tmp_path):
    config = load_config(None, ["project.seed=11"])
    artifact = tmp_path / "report.txt"
    artifact.write_text("hello")
    with tracking.pipeline_run("exp", "pipeline-1", project=project) as parent:
        with tracking.stage_run(
            "pretrain", "exp", params=config.flat(), tags={"dataset.dvc_md5": "abc.dir"}, project=project
        ) as child:
            for step, loss in enumerate([3.0, 2.0, 1.0]):
                tracking.log_metrics({"loss": loss}, step=step)
            tracking.log_artifacts(artifact)
        with tracking.stage_run("evaluate", "exp", project=project):
            tracking.log_metrics({"psnr": 25.0})

    client = mlflow.MlflowClient(tracking.tracking_uri(project))
    run = client.get_run(child.info.run_id)
    assert run.data.params["project.seed"] == "11"
    assert run.data.tags["stage"] == "pretrain"
    assert run.data.tags["dataset.dvc_md5"] == "abc.dir"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "git.sha" in run.data.tags
    history = client.get_metric_history(child.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["report.txt"]
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["stage"] for r in children) == ["evaluate", "pretrain"]
    artifact_root = client.get_experiment(run.info.experiment_id).artifact_location
    assert artifact_root.startswith((project.root / "mlartifacts").as_uri())


def test_long_param_values_are_cut_not_rejected(project):
    with tracking.stage_run("s", "exp", params={"long": "x" * 10000}, project=project) as run:
        pass
    value = mlflow.MlflowClient(tracking.tracking_uri(project)).get_run(run.info.run_id).data.params["long"]
    assert len(value) == tracking.MAX_PARAM_LENGTH
