"""Prefect flows on a real (ephemeral) Prefect API: stage caching, retries, resume, validation.

Every run is the real pipeline at the `tiny` preset: a simulator dataset tracked in DVC, DeepSpeed
pretraining for a few steps, evaluation, registration and promotion in a SQLite MLflow store.
"""

from __future__ import annotations

import mlflow
import pytest

from worldforge.config import ConfigError
from worldforge.core import tracking


@pytest.fixture
def flows(harness, project):
    from worldforge.pipelines import flows

    return flows


def run(flows, project, *overrides: str, **kwargs) -> dict:
    return flows.train_and_compress(
        preset="tiny", overrides=list(overrides), root=str(project.root), **kwargs
    )


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


def test_the_dataset_key_follows_the_data_seed_not_the_project_seed(tiny_config):
    from worldforge.pipelines.stages import stage_key

    base = tiny_config()
    reseeded = tiny_config("project.seed=1")  # the same episodes: they follow data.seed
    assert stage_key("build_dataset", base) == stage_key("build_dataset", reseeded)
    assert stage_key("build_dataset", base) != stage_key("build_dataset", tiny_config("data.seed=1"))
    assert stage_key("pretrain_world", base) != stage_key("pretrain_world", reseeded)


def test_missing_output_is_rebuilt_not_served_from_cache(flows, project):
    import shutil
    from pathlib import Path

    first = run(flows, project)
    shutil.rmtree(first["world"]["path"])
    again = run(flows, project)
    assert again["cached"]["pretrain_world"] is False
    assert Path(again["world"]["path"], "model.safetensors").is_file()


def test_transient_failure_is_retried(flows, project, monkeypatch):
    from worldforge.pipelines import tasks as evaluate_module  # where the evaluate task finds it

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

    from worldforge.pipelines import tasks as evaluate_module  # where the evaluate task finds it

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


def test_distill_stage_follows_pretraining_with_its_student_registered(flows, project, files_naming):
    import json
    from pathlib import Path

    result = run(flows, project, "pipeline.compress=[distill]")

    (entry,) = result["compressed"]
    assert entry["stage"] == "distill" and entry["cached"] is False
    package = Path(entry["package"]["path"])
    assert json.loads((package / "config.json").read_text())["sampler"]["steps"] == 1
    lineage = json.loads((package / "lineage.json").read_text())
    world = Path(result["world"]["path"])
    assert (
        lineage["parent"] == str(world.relative_to(project.root))
        and lineage["parent_md5"] == result["world"]["md5"]
    )
    assert lineage["dataset"].startswith(
        "datasets/"
    )  # relative to the project root: a pull elsewhere still resolves
    # no file of either package names the root: lineage.json (the pretraining checkpoint too) and
    # metrics.json (the dataset, the reference) hold paths relative to it
    assert files_naming(world, project.root) == [] and files_naming(package, project.root) == []
    assert json.loads((package / "metrics.json").read_text())["dataset"] == lineage["dataset"]
    assert json.loads((world / "lineage.json").read_text())["params"]["checkpoint"].startswith("checkpoints/")
    client = mlflow.MlflowClient(tracking.tracking_uri(project))
    family, number = lineage["parent_version"].removeprefix("models:/").split("/")
    # the parent was registered earlier in this same pipeline run, and lineage names that version
    assert client.get_model_version(family, number).tags["package.md5"] == result["world"]["md5"]
    assert set(lineage) == {
        "stage",
        "parent",
        "parent_md5",
        "parent_version",
        "dataset",
        "dataset_md5",
        "git_sha",
        "mlflow_run_id",
        "params",
    }
    assert entry["metrics"]["reference"]["denoise_steps"] == 2  # evaluated against the 2-step teacher
    assert stage_runs(project, result["mlflow_run_id"])["distill"] == "FINISHED"
    version = mlflow.MlflowClient(tracking.tracking_uri(project)).get_model_version(
        "worldforge-sim-tiny-ci", entry["version"]
    )
    assert version.tags["stage"] == "distill" and version.tags["parent.model"] == result["world"]["md5"]

    # `worldforge lineage`: the chain back to the dataset, and its exact inputs restored elsewhere
    from worldforge.packages import package_md5
    from worldforge.registry.trace import TraceError, pull, rebuild, trace

    chain = trace(f"models:/worldforge-sim-tiny-ci/{entry['version']}")
    assert [a.stage for a in chain.ancestors] == ["distill", "pretrain_world"]
    assert (
        chain.ancestors[1].version == lineage["parent_version"]
        and chain.ancestors[1].package_md5 == result["world"]["md5"]
    )
    assert chain.dataset[1] == lineage["dataset_md5"] and all(a.dvc_md5 for a in chain.ancestors)
    dest = project.root.parent / "elsewhere"
    restored = pull(chain, dest)
    assert restored[lineage["dataset"]] == lineage["dataset_md5"]
    assert package_md5(dest / lineage["parent"]) == result["world"]["md5"]  # the exact parent, md5-checked
    assert (dest / lineage["dataset"] / "manifest.json").is_file()
    import hashlib

    def shards(root):
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (root / lineage["dataset"]).glob("*.tar")
        }

    assert shards(dest) == shards(project.root) and shards(
        dest
    )  # byte-identical shards, from the remote alone
    recorded, rebuilt = rebuild(chain, dest / lineage["dataset"])  # the data, from its recorded config alone
    assert rebuilt == recorded == lineage["dataset_md5"]
    # an object missing from the remote: named, and nothing half-restored is left behind
    remote = project.root / "dvc-remote"
    victim = next(p for p in remote.rglob("*") if p.is_file() and p.suffix == ".dir")
    victim.unlink()
    with pytest.raises(TraceError, match="missing from the remote"):
        pull(chain, project.root.parent / "second")
    assert not (project.root.parent / "second").exists()
