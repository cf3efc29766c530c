"""Every stage command of the CLI is a Prefect flow run: on the API at PREFECT_API_URL (here the
test harness's server), named after the command, Completed, or Failed with the error's message."""

from __future__ import annotations

from datetime import datetime, timezone

from typer.testing import CliRunner

from worldforge.cli import app


def flow_runs(since: datetime) -> dict[str, list[tuple[str, str | None]]]:
    """Flow name -> [(state type, state message)] of every run created on the API since `since`
    (the API is shared by the pipeline tests)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        names = {flow.id: flow.name for flow in client.read_flows()}
    found: dict[str, list[tuple[str, str | None]]] = {}
    for run in runs:
        if run.created < since:
            continue
        found.setdefault(names[run.flow_id], []).append((run.state.type.value, run.state.message))
    return found


def test_stage_commands_run_as_prefect_flow_runs(harness, project):
    began = datetime.now(timezone.utc)
    runner = CliRunner()
    built = runner.invoke(app, ["data", "build", "tiny"])
    assert built.exit_code == 0, built.output
    trained = runner.invoke(app, ["train", "world", "tiny"])
    assert trained.exit_code == 0, trained.output
    package = project.packages / "worldforge-sim-tiny-ci-pretrain_world"
    assert (package / "model.safetensors").is_file()
    pruned = runner.invoke(
        app,
        [
            "compress",
            "prune",
            "tiny",
            "--model",
            str(package),
            "--target",
            "heads=1",
            "--no-recover",
            "--no-track",
        ],
    )
    assert pruned.exit_code == 0, pruned.output

    runs = flow_runs(began)
    for name in ("data-build", "train-world", "compress-prune"):
        assert [state for state, _ in runs.get(name, [])] == ["COMPLETED"], (name, runs)


def test_a_stage_command_with_bad_input_is_a_failed_flow_run_with_the_reason(harness, project):
    began = datetime.now(timezone.utc)
    missing = project.root / "no-such-package"
    result = CliRunner().invoke(app, ["compress", "prune", "tiny", "--model", str(missing), "--no-track"])
    assert result.exit_code == 2
    assert "no-such-package" in result.output  # one clear line, no traceback
    assert "Traceback" not in result.output
    failed = [message for state, message in flow_runs(began)["compress-prune"] if state == "FAILED"]
    assert failed and "no-such-package" in failed[-1]
