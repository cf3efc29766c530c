"""The pretraining stages as the flows and the CLI call them: a package out, tracked in DVC, and an
MLflow stage run whose params, metrics and artifacts read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from worldforge.cli.train import app
from worldforge.core.lineage import DataRepo
from worldforge.packages import load_package
from worldforge.packages.lineage import project_folder
from worldforge.training.export import export_checkpoint
from worldforge.training.pretrain import pretrain_tokenizer, pretrain_world

VAE = [
    "tokenizer.kind=vae",
    "tokenizer.spatial_compression=8",
    "tokenizer.latent_channels=4",
    "tokenizer.base_channels=8",
    "model.patch_size=1",
    "sampler.palette=false",  # the quickstart's palette redraws pixels, which a VAE's latents are not
]


@pytest.fixture
def tracked_dataset(project, tiny_config) -> Path:
    from worldforge.data.shards import build_dataset

    return build_dataset(tiny_config(), project.datasets / "sim", track=True, progress=False).path


def stage_run(experiment: str, stage: str):
    import mlflow

    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], filter_string=f"tags.stage = '{stage}'"
    )
    assert len(runs) == 1
    return client, runs[0]


def test_pretrain_world_tracks_metrics_artifacts_and_a_dvc_package(
    project, tiny_config, tracked_dataset: Path
):
    config = tiny_config(
        "train.steps=4",
        "train.validation.every=2",
        "train.checkpoint_every=2",
        "train.peak_tflops=0.5",
        "project.experiment=pretrain-test",
    )
    path = pretrain_world(config, tracked_dataset)

    package = load_package(path)
    repo = DataRepo(project)
    assert package.lineage.dataset_md5 == repo.md5(tracked_dataset)
    assert package.lineage.params["steps"] == 4 and package.lineage.stage == "pretrain_world"
    assert package.metrics["psnr_h1"] > 0 and "baseline_psnr_h1" in package.metrics

    client, run = stage_run("pretrain-test", "pretrain_world")
    assert run.data.params["train.lr"] == "0.001" and run.data.params["engine.zero_stage"] == "0"
    assert run.data.tags["dataset.dvc_md5"] == repo.md5(tracked_dataset)
    assert run.data.tags["package.dvc_md5"] == repo.md5(path)
    assert package.lineage.mlflow_run_id == run.info.run_id

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    assert [step for step, _ in history("train/loss")] == [1, 2, 3, 4]
    for key in (
        "train/lr",
        "train/grad_norm",
        "train/samples_per_s",
        "train/tokens_per_s",
        "train/peak_memory_mb",
    ):
        assert all(value > 0 for _, value in history(key)), key
    tokens = dict(history("train/tokens_per_s"))
    samples = dict(history("train/samples_per_s"))
    assert tokens[4] == pytest.approx(samples[4] * 4 * 16)  # 4 frames x (32 / 8)^2 tokens per clip
    mfu, tflops = dict(history("train/mfu")), dict(history("train/tflops"))
    assert mfu[4] == pytest.approx(tflops[4] / 0.5)
    for key in ("val/psnr_h1", "val/psnr_h4", "val/baseline_psnr_h1", "val/ssim_h1"):
        assert [step for step, _ in history(key)] == [2, 4], key

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"package", "validation", "deepspeed-pretrain_world.json"} <= artifacts
    package_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "package")}
    assert {"config.json", "model.safetensors", "lineage.json", "metrics.json"} <= package_files
    # the final ZeRO-0 checkpoint, recorded relative to the project root, exports offline to the
    # package the run wrote (EMA weights)
    checkpoint = package.lineage.params["checkpoint"]
    assert not Path(checkpoint).is_absolute()
    exported = load_package(export_checkpoint(project_folder(checkpoint), project.packages / "exported"))
    for name, value in package.state.items():
        assert torch.equal(exported.state[name], value), name

    gifs = [
        a.path
        for a in client.list_artifacts(run.info.run_id, "validation/step00000004")
        if a.path.endswith(".gif")
    ]
    assert gifs, "a rollout next to ground truth"


def test_tokenizer_stage_feeds_the_world_stage(project, tiny_config, tracked_dataset: Path):
    from worldforge.core import tracking

    config = tiny_config(*VAE, "train.steps=2", "train.tokenizer_steps=2", "project.experiment=chain")
    with tracking.pipeline_run("chain", "pipeline", project=project) as parent:
        tokenizer = pretrain_tokenizer(config, tracked_dataset)
        world = pretrain_world(config, tracked_dataset, tokenizer_package=tokenizer)

    first, second = load_package(tokenizer), load_package(world)
    assert first.metrics["reconstruction_psnr"] > 0
    for name, value in first.state.items():
        if name.startswith("tokenizer."):  # the world stage kept the pretrained tokenizer frozen
            assert torch.equal(second.state[name], value), name
    assert second.lineage.parent == str(Path(tokenizer).relative_to(project.root))
    for stage in ("pretrain_tokenizer", "pretrain_world"):
        _, run = stage_run("chain", stage)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_patch_tokenizer_has_no_tokenizer_stage(project, tiny_config, tracked_dataset: Path):
    assert pretrain_tokenizer(tiny_config(), tracked_dataset) is None


def test_cli_trains_with_overrides_and_a_deepspeed_config(
    project, tiny_config, tracked_dataset: Path, tmp_path: Path
):
    from training_runs import TINY

    overrides = [arg for item in TINY + ["train.steps=2", "project.experiment=cli"] for arg in ("-o", item)]
    out = project.packages / "cli-world"
    result = CliRunner().invoke(
        app,
        [
            "world",
            "quickstart",
            *overrides,
            "--dataset",
            str(tracked_dataset),
            "--out",
            str(out),
            "--deepspeed-config",
            "zero1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"package: {out}" in result.output
    _, run = stage_run("cli", "pretrain_world")
    assert run.data.params["train.deepspeed"] == "zero1" and run.data.params["engine.zero_stage"] == "1"

    bad = CliRunner().invoke(
        app,
        ["world", "quickstart", *overrides, "--deepspeed-config", "zero9", "--dataset", str(tracked_dataset)],
    )
    assert bad.exit_code == 2 and "zero9" in bad.output and "known: " in bad.output
