"""The model registry against real MLflow stores: the embedded SQLite file, and a real
`mlflow server` process on loopback (same tests, `store` parameter).

Packages hold real tiny world models; their metrics.json is written by hand so that each test
knows which gates must pass or fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from worldforge import registry
from worldforge.core.runtime import free_port
from worldforge.packages import load_package, package_md5, save_package, write_metrics
from worldforge.registry import resolve
from worldforge.registry.config import RegistryConfig

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

GOOD = {
    "psnr_mean": 25.0,
    "baseline_psnr_mean": 20.0,
    "agent_position_error": 0.03,
    "baseline_agent_position_error": 0.09,
    "object_position_error": 0.04,
    "baseline_object_position_error": 0.10,
    "realism_psnr_h8": 30.0,
    "truth_realism_psnr_h8": 32.0,
    "sharpness_mean": 0.95,
    "fps_e2e": 100.0,
    "fps_e2e_spread": 0.02,
    "fps_denoise": 120.0,
    "flops_per_frame": 2.0e6,
    "device": "cpu",
}
# What an evaluation against the parent adds (a compression stage): the parent's numbers.
PARENT = {"reference_psnr_mean": 25.0, "reference_realism_psnr_h8": 30.0, "reference_sharpness_mean": 0.95}
SERVER_START_TIMEOUT_S = 180


def metrics(**changes) -> dict:
    return {**GOOD, **changes}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path):
    """A real `mlflow server` on a free loopback port, SQLite backend and artifacts in a temp dir."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(mlflow_template, root / "server.db")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    with open(root / "server.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, root / "server.log")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn worker: its own session
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"mlflow server at {url} not healthy after {SERVER_START_TIMEOUT_S} s:\n"
                f"{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def store(request, project, mlflow_template: Path, monkeypatch) -> str:
    """The project's registry: its own SQLite file, or the module's MLflow server."""
    if request.param == "sqlite":
        shutil.copy(mlflow_template, project.mlflow_db)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("mlflow_server"))
    return request.param


@pytest.fixture
def family() -> str:
    return f"wf-test-{uuid.uuid4().hex[:8]}"  # unique: tests share the server


@pytest.fixture
def make_package(tmp_path: Path):
    """`make_package(metrics, seed=0, lineage=None)`: a saved tiny world model with those metrics."""
    from worldforge.models.config import ModelConfig, SamplerConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel, package_config

    def make(package_metrics: dict, seed: int = 0, lineage: dict | None = None) -> Path:
        torch.manual_seed(seed)
        model = WorldModel.from_config(
            TokenizerConfig(frame_size=(32, 32)),
            ModelConfig(preset="tiny", depth=1, width=32, heads=2, context_window=4, num_actions=6),
            sampler_cfg=SamplerConfig(steps=1),
        )
        path = tmp_path / f"package-{seed}-{uuid.uuid4().hex[:6]}"
        return save_package(path, package_config(model), model, lineage=lineage, metrics=package_metrics)

    return make


def register(path: Path, family: str, package_metrics: dict | None = None) -> str:
    """Register `path` (its metrics.json first replaced by `package_metrics`); the version number."""
    if package_metrics is not None:
        write_metrics(path, package_metrics)
    return str(registry.register_package(path, family, "pretrain").version)


def test_register_records_lineage_metrics_and_a_loadable_pyfunc(store, family, make_package):
    lineage = {"parent": "models:/upstream/4", "git_sha": "0123abcd", "dataset_md5": "from-lineage.dir"}
    path = make_package(metrics(), lineage=lineage)
    version = registry.register_package(path, family, "distill", tags={"dataset.dvc_md5": "given.dir"})

    tags = version.tags
    assert tags["stage"] == "distill"
    assert tags["package.md5"] == package_md5(path)
    assert tags["git.sha"] == "0123abcd"
    assert tags["parent.model"] == "models:/upstream/4"
    assert tags["dataset.dvc_md5"] == "given.dir"  # explicit tags win over lineage.json
    assert float(tags["metric.psnr_mean"]) == 25.0 and float(tags["metric.fps_e2e"]) == 100.0
    assert tags["eval.device"] == "cpu"
    assert version.aliases == ["candidate"]  # evaluated and beats copy-last-frame

    model = mlflow.pyfunc.load_model(f"models:/{family}/{version.version}")
    assert model.metadata.get_input_schema().input_names() == ["context_frames", "actions"]
    frames = model.predict(
        {"context_frames": np.zeros((1, 2, 3, 32, 32), np.float32), "actions": np.zeros((1, 4), np.int64)},
        params={"horizon": 2},
    )
    assert frames.shape == (1, 2, 3, 32, 32) and np.abs(frames).max() <= 1.0


def test_only_evaluated_versions_that_beat_the_baseline_become_candidate(store, family, make_package):
    good = register(make_package(metrics()), family)
    register(make_package({}), family)  # never evaluated
    register(make_package(metrics(psnr_mean=19.0)), family)  # loses to copy-last-frame
    assert registry.alias_version(family, registry.CANDIDATE) == good


def test_first_promotion_skips_champion_gates_but_must_beat_copy_last(store, family, make_package):
    path = make_package(metrics(psnr_mean=19.0))
    loser = register(path, family)
    decision = registry.promote(family, loser)
    assert decision.outcome == "rejected" and decision.champion_after is None
    assert decision.failed_checks == ["beats_copy_last_frame"]
    assert registry.alias_version(family, registry.CHAMPION) is None

    winner = register(path, family, metrics())
    decision = registry.promote(family, winner)
    assert decision.promoted and decision.champion_before is None and decision.champion_after == winner
    skipped = {check.name: check.detail for check in decision.checks if check.status == "skipped"}
    assert skipped == {
        "action_sensitivity": "the dataset has ground-truth state: agent_error_below_copy_last judges it",
        "agent_error_vs_parent": "not evaluated against a parent",
        "object_error_vs_parent": "not evaluated against a parent",
        "realism_gap_vs_parent": "not evaluated against a parent",
        "sharpness_vs_parent": "not evaluated against a parent",
        "psnr_drop_vs_champion": "no champion yet",
        "fps_e2e_ratio_vs_champion": "no champion yet",
    }

    [recorded] = registry.decisions(registry.get_version(family, loser))
    assert recorded.outcome == "rejected" and recorded.failed_checks == ["beats_copy_last_frame"]
    assert registry.get_version(family, winner).tags["promotion.last_outcome"] == "promoted"


def test_a_failing_gate_leaves_the_champion_and_records_the_failing_check(store, family, make_package):
    path = make_package(metrics())
    champion = register(path, family)
    assert registry.promote(family, champion).promoted

    worse = register(path, family, metrics(psnr_mean=24.0))  # drops 1.0 dB > 0.5
    slower = register(path, family, metrics(fps_e2e=80.0))  # 0.8x < 1.0x, beyond the 4% timing noise
    blurry = register(path, family, metrics(sharpness_mean=0.3))  # PSNR still +5 dB over copy-last
    # beats copy-last (PSNR, agent, balls), action sensitivity (skipped: the state judges it),
    # realism gap, sharpness
    absolute = ["pass"] * 3 + ["skipped"] + ["pass"] * 2
    vs_parent = ["skipped"] * 4  # agent, balls, realism gap, sharpness: not evaluated against a parent
    cases = (  # ..., then vs champion: PSNR drop, frames/s
        (worse, "psnr_drop_vs_champion", [*absolute, *vs_parent, "fail", "pass"]),
        (slower, "fps_e2e_ratio_vs_champion", [*absolute, *vs_parent, "pass", "fail"]),
        (blurry, "sharpness_in_range", [*absolute[:-1], "fail", *vs_parent, "pass", "pass"]),
    )
    for version, failing, statuses in cases:
        decision = registry.promote(family, version)
        assert decision.outcome == "rejected" and decision.failed_checks == [failing]
        assert registry.alias_version(family, registry.CHAMPION) == champion
        tags = registry.get_version(family, version).tags
        assert tags["promotion.last_outcome"] == "rejected" and tags["promotion.failed_checks"] == failing
        recorded = json.loads(tags[f"decision.{decision.id}"])
        assert recorded["champion_before"] == recorded["champion_after"] == champion
        assert [check["status"] for check in recorded["checks"]] == statuses

    assert (
        registry.promote(family, champion).outcome == "unchanged"
    )  # already champion: recorded, nothing moves
    lenient = RegistryConfig(max_psnr_drop_db=1.5)  # gates are config: the same version passes looser ones
    assert registry.promote(family, worse, lenient).promoted
    assert registry.alias_version(family, registry.CHAMPION) == worse
    assert len(registry.decisions(registry.get_version(family, worse))) == 2  # both decisions kept


def test_a_model_that_follows_actions_worse_than_copy_last_is_rejected(store, family, make_package):
    # Better PSNR than copy-last-frame, but the agent lands further from where the actions put it
    # than if nothing had moved: a blurry frame that has not learned the world.
    path = make_package(metrics(agent_position_error=0.0955, baseline_agent_position_error=0.0921))
    version = register(path, family)
    decision = registry.promote(family, version)
    assert decision.outcome == "rejected" and decision.failed_checks == ["agent_error_below_copy_last"]
    [check] = [c for c in decision.checks if c.name == "agent_error_below_copy_last"]
    assert check.value == pytest.approx(0.0955 / 0.0921) and check.threshold == 1.0
    assert "0.0955 vs copy-last-frame 0.0921" in check.detail
    assert registry.alias_version(family, registry.CHAMPION) is None


def test_a_compression_stage_may_not_place_things_much_worse_than_its_parent(store, family, make_package):
    path = make_package(metrics())
    assert registry.promote(family, register(path, family)).promoted
    # evaluated against its parent: balls 15% worse than the parent's (allowed: 10%)
    drifting = register(
        path,
        family,
        metrics(**PARENT, reference_agent_position_error=0.03, reference_object_position_error=0.0348),
    )
    decision = registry.promote(family, drifting)
    assert decision.failed_checks == ["object_error_vs_parent"]
    [check] = [c for c in decision.checks if c.name == "object_error_vs_parent"]
    assert check.value == pytest.approx(0.04 / 0.0348) and check.threshold == pytest.approx(1.1)
    close = register(
        path,
        family,
        metrics(**PARENT, reference_agent_position_error=0.03, reference_object_position_error=0.038),
    )
    assert registry.promote(family, close).promoted  # 5% worse: within the margin
    # the parent drew frames of sharpness 0.95; this compression blurred them to 0.76
    blurred = register(
        path,
        family,
        metrics(
            **PARENT,
            sharpness_mean=0.76,
            reference_agent_position_error=0.03,
            reference_object_position_error=0.04,
        ),
    )
    assert registry.promote(family, blurred).failed_checks == ["sharpness_in_range", "sharpness_vs_parent"]


def test_a_version_within_timing_noise_of_the_champion_is_promoted(store, family, make_package):
    path = make_package(metrics())
    assert registry.promote(family, register(path, family)).promoted
    # 0.97x on one measurement each, both spreads 2%: within noise, and the FLOPs are no higher
    noisy = register(path, family, metrics(fps_e2e=97.0, flops_per_frame=1.4e6))
    decision = registry.promote(family, noisy)
    assert decision.promoted
    [speed] = [c for c in decision.checks if c.name == "fps_e2e_ratio_vs_champion"]
    assert speed.threshold == pytest.approx(0.96) and "within noise, so FLOPs decide" in speed.detail


def test_rollback_walks_back_through_the_champions(store, family, make_package):
    path = make_package(metrics())
    first = register(path, family)
    second = register(path, family, metrics(psnr_mean=25.2))
    third = register(path, family, metrics(psnr_mean=25.4))
    for version in (first, second, third):
        assert registry.promote(family, version).promoted

    assert registry.rollback(family) == second
    assert registry.alias_version(family, registry.CHAMPION) == second
    assert registry.rollback(family) == first
    with pytest.raises(registry.RegistryError, match="first champion"):
        registry.rollback(family)
    events = [(e["action"], e["version"], e["previous"]) for e in registry.champion_history(family)]
    assert events == [
        ("promote", first, None),
        ("promote", second, first),
        ("promote", third, second),
        ("rollback", second, third),
        ("rollback", first, second),
    ]
    assert registry.decisions(registry.get_version(family, third))[-1].outcome == "rolled_back"


def test_champion_uri_loads_the_promoted_package_bit_exact(store, family, make_package, project):
    path = make_package(metrics(), seed=3)
    version = register(path, family)
    registry.promote(family, version)

    loaded = load_package(resolve(f"models:/{family}@champion"))
    original = load_package(path)
    assert loaded.path == project.packages / ".registry-cache" / family / version
    assert package_md5(loaded.path) == package_md5(path)
    assert loaded.state.keys() == original.state.keys()
    assert all(torch.equal(loaded.state[name], original.state[name]) for name in original.state)
    before = (loaded.path / "model.safetensors").stat().st_mtime_ns
    assert (
        load_package(resolve(f"models:/{family}/{version}")).path == loaded.path
    )  # cached, not downloaded again
    assert (loaded.path / "model.safetensors").stat().st_mtime_ns == before


RACER = """
import json, sys, time
from pathlib import Path
from worldforge import registry
family, version, ready, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
registry.get_version(family, version)  # imports and connections done before the start line
ready.touch()
while not go.exists():
    time.sleep(0.002)
print(json.dumps(registry.promote(family, version).as_dict()))
"""


def test_racing_promotions_from_two_processes_stay_consistent(store, family, make_package, tmp_path):
    path = make_package(metrics(psnr_mean=21.0))
    base = register(path, family)
    registry.promote(family, base)
    strong = register(path, family, metrics(psnr_mean=25.0))  # passes vs base and vs weak
    weak = register(path, family, metrics(psnr_mean=24.0))  # passes vs base, fails vs strong (drop 1.0)

    go = tmp_path / "go"
    racers = []
    for version in (strong, weak):
        ready = tmp_path / f"ready-{version}"
        racers.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, "-c", RACER, family, version, str(ready), str(go)],
                    stdout=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in racers):
        assert all(p.poll() is None for _, p in racers), "a racer died before the start"
        assert time.monotonic() < deadline, "racers not ready after 120 s"
        time.sleep(0.01)
    go.touch()
    outcomes = {}
    for _, process in racers:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        decision = json.loads(out.strip().splitlines()[-1])
        outcomes[decision["version"]] = decision

    champion = registry.alias_version(family, registry.CHAMPION)
    assert champion in (strong, weak)  # the alias ends on one of the two
    for version in (strong, weak):  # and both decisions are recorded, each on its version
        [recorded] = registry.decisions(registry.get_version(family, version))
        assert recorded.id == outcomes[version]["id"]
    holder = registry.decisions(registry.get_version(family, champion))[0]
    assert holder.outcome == "promoted"
    history = registry.champion_history(family)
    assert next(e["version"] for e in history if e["action"] == "promote") == base
    assert len(history) == 1 + sum(o["outcome"] in ("promoted", "superseded") for o in outcomes.values())
    if store == "sqlite":
        # Serialised by the lock: the second promotion was checked against the first one's result,
        # so whatever the order, `strong` ends as champion and `weak` never replaces it.
        assert champion == strong
        first, second = sorted(outcomes.values(), key=lambda d: d["id"])
        assert second["champion_before"] == (first["version"] if first["outcome"] == "promoted" else base)
        assert registry.champion_stack(family)[-1] == champion


def test_registry_cli_promotes_shows_lists_and_rolls_back(
    project, mlflow_template, family, make_package, monkeypatch
):
    from typer.testing import CliRunner

    from worldforge.cli.registry import app

    shutil.copy(mlflow_template, project.mlflow_db)
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    path = make_package(metrics())
    first = register(path, family)
    second = register(path, family, metrics(psnr_mean=25.3))
    worse = register(path, family, metrics(psnr_mean=23.0))

    for version in (first, second):
        result = runner.invoke(app, ["promote", family, version])
        assert result.exit_code == 0, result.output
        assert "promoted" in result.output
    result = runner.invoke(app, ["promote", family, worse])
    assert result.exit_code == 1  # not promoted: scripts can tell
    assert (
        "rejected" in result.output and "psnr_drop_vs_champion" in result.output and "FAIL" in result.output
    )
    result = runner.invoke(app, ["promote", family, worse, "-o", "registry.max_psnr_drop_db=3"])
    assert result.exit_code == 0, result.output  # gates come from config and overrides

    listing = runner.invoke(app, ["list"])
    assert listing.exit_code == 0 and family in listing.output
    versions = runner.invoke(app, ["list", family])
    assert versions.exit_code == 0 and "champion" in versions.output and "promoted" in versions.output
    shown = runner.invoke(app, ["show", family, worse])
    assert shown.exit_code == 0
    assert shown.output.count("psnr_drop_vs_champion") == 2  # both decisions on the version are shown
    assert "champion history" in shown.output

    result = runner.invoke(app, ["rollback", family])
    assert result.exit_code == 0, result.output
    assert f"from version {worse} to version {second}" in result.output
    assert registry.alias_version(family, registry.CHAMPION) == second
    missing = runner.invoke(app, ["show", "no-such-family"])
    assert missing.exit_code == 2 and "no-such-family" in missing.output and "Traceback" not in missing.output


def test_a_tampered_registered_package_is_refused_on_download(project, mlflow_template, family, make_package):
    from worldforge.packages import PackageError

    shutil.copy(mlflow_template, project.mlflow_db)
    version = register(make_package(metrics()), family)
    [stored] = project.mlflow_artifacts.rglob("model.safetensors")  # the artifact store's copy
    stored.write_bytes(stored.read_bytes()[:-8] + b"tampered")
    with pytest.raises(PackageError, match=f"models:/{family}/{version}.*md5"):
        load_package(resolve(f"models:/{family}/{version}"))
    assert not (project.packages / ".registry-cache" / family / version).exists()
