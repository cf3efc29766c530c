"""Data parallelism is only a way to split the work: two processes under ZeRO-2 or ZeRO-3 give the
loss curve and the weights of one process with two micro-batches of gradient accumulation, and a
ZeRO-3 run's consolidated package holds exactly the weights in its ZeRO checkpoint.

The two-process runs are real: `torchrun --nproc_per_node 2` on CPU (gloo, DS_ACCELERATOR=cpu),
each rank a separate Python process; only rank 0 writes to MLflow, whose experiment the test
creates first (several processes creating one SQLite store race).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_runs import equivalence_run

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.distributed

# Every run: 6 optimizer steps of 4 clips each, no EMA (the package holds the raw weights).
COMMON = ["train.steps=6", "train.ema_decay=0", "train.checkpoint_every=3", "train.validation.every=0"]
ONE_PROCESS = ["train.batch_size=2", "train.grad_accumulation=2", "train.deepspeed=zero0"]
TWO_PROCESSES = ["train.batch_size=2", "train.grad_accumulation=1"]


def torchrun(out: Path, dataset: Path, overrides: list[str], *extra: str) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "training_runs.py"),
        str(out),
        str(dataset),
        *extra,
    ]
    for override in overrides:
        command += ["-o", override]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def loss_curve(experiment: str) -> list[float]:
    import mlflow

    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, 7))
    return [m.value for m in history]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, zero3_partition_all):
    """The same training as 1 process x 2 accumulation, 2 processes ZeRO-2, 2 processes ZeRO-3."""
    from worldforge.core.project import Project
    from worldforge.core.tracking import ensure_experiment

    root = tmp_path_factory.mktemp("distributed") / "project"
    root.mkdir()
    saved = os.environ.get("WORLDFORGE_ROOT")
    os.environ["WORLDFORGE_ROOT"] = str(root)
    try:
        zero3 = zero3_partition_all(root)
        layouts = {
            "accumulation": (None, ONE_PROCESS),
            "zero2": ("zero2", TWO_PROCESSES),
            "zero3": (str(zero3), TWO_PROCESSES),
        }
        for name, (deepspeed, layout) in layouts.items():
            overrides = [*COMMON, *layout, f"project.experiment=runs-{name}"]
            if deepspeed:
                overrides.append(f"train.deepspeed={deepspeed}")
            ensure_experiment(f"runs-{name}", Project.current(root))
            if name == "accumulation":
                equivalence_run(root / name, tiny_dataset, overrides)
            else:
                torchrun(root / name, tiny_dataset, overrides)
        yield root
    finally:
        if saved is None:
            os.environ.pop("WORLDFORGE_ROOT", None)
        else:
            os.environ["WORLDFORGE_ROOT"] = saved


@pytest.mark.parametrize("layout", ["zero2", "zero3"])
def test_two_processes_follow_the_loss_curve_of_one_process_with_accumulation(runs: Path, layout: str):
    reference = loss_curve("runs-accumulation")
    curve = loss_curve(f"runs-{layout}")
    assert len(set(reference)) == len(reference)  # a real curve, every step its own loss
    assert curve == pytest.approx(reference, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("layout", ["zero2", "zero3"])
def test_two_processes_end_with_the_weights_of_one_process_with_accumulation(runs: Path, layout: str):
    from worldforge.packages import load_package

    reference = load_package(runs / "accumulation" / "package").state
    weights = load_package(runs / layout / "package").state
    assert weights.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(weights[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)


def test_zero3_package_matches_the_weights_in_its_zero_checkpoint(runs: Path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from worldforge.packages import load_package

    package = load_package(runs / "zero3" / "package")
    record = json.loads((runs / "zero3" / "checkpoints" / "step00000006" / "worldforge.json").read_text())
    assert record["deepspeed"]["zero_optimization"]["stage"] == 3
    engine_weights = get_fp32_state_dict_from_zero_checkpoint(str(runs / "zero3" / "checkpoints"))
    engine_weights = {k.removeprefix("model."): v for k, v in engine_weights.items()}
    trained = {k: v for k, v in package.state.items() if k in engine_weights}
    assert trained, "the checkpoint holds the trained weights"
    for name, value in trained.items():
        torch.testing.assert_close(value, engine_weights[name].float(), rtol=0, atol=0, msg=name)
    package.build()  # and it loads into a model, strictly


@pytest.mark.slow
def test_dmd_under_zero3_with_two_processes_trains_the_zero2_student(
    tmp_path: Path, project, tiny_dataset: Path, zero3_partition_all, make_world_model
):
    """DMD's two engines (the student's and the fake score's), each calling the other's network:
    with every parameter partitioned across the two ranks (ZeRO-3) the student comes out as with
    whole parameters on each rank (ZeRO-2), on the same micro-batches."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import load_package, save_package

    teacher_model = make_world_model(steps=2)
    teacher = save_package(tmp_path / "teacher", package_config(teacher_model), teacher_model)
    runs = {}
    for name, deepspeed in (("zero2", "zero2"), ("zero3", str(zero3_partition_all(tmp_path)))):
        overrides = [
            *TWO_PROCESSES,
            "train.ema_decay=0",
            "train.validation.every=0",
            f"train.deepspeed={deepspeed}",
        ]
        torchrun(tmp_path / name, tiny_dataset, overrides, "--dmd-teacher", str(teacher))
        runs[name] = load_package(tmp_path / name / "package").state
    trained = load_package(teacher).state
    assert any(not torch.equal(runs["zero2"][k], trained[k]) for k in trained)
    # Adam turns DMD's small early gradients into lr-sized steps, so the reduction order of the two
    # layouts (rounding in the 7th digit of a gradient) shows in the updates: compare each tensor's
    # difference with the size of its update (max 0.04 of it measured; a wrong gather is garbage).
    for key, expected in runs["zero2"].items():
        update = float((expected - trained[key]).abs().max())
        difference = float((runs["zero3"][key] - expected).abs().max())
        assert difference <= 0.1 * update + 1e-7, (key, difference, update)
