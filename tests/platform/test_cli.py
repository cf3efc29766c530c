"""The CLI: help lists the groups, config show resolves, doctor passes live and fails with advice."""

import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from worldforge.cli import app

runner = CliRunner()


def test_every_command_is_registered_under_its_group():
    """The registered command tree itself (not words of the help text, which the app's own
    description would contain even with a group missing)."""
    commands = typer.main.get_command(app).commands
    tree = {name: sorted(getattr(command, "commands", {})) for name, command in commands.items()}
    assert tree == {
        "compress": ["distill", "prune", "quantize"],
        "config": ["list", "show"],
        "data": ["build", "inspect", "verify"],
        "doctor": [],
        "eval": [],
        "lineage": [],
        "model": ["info"],
        "play": [],
        "pipeline": ["deploy", "run", "serve"],
        "registry": ["list", "promote", "rollback", "show"],
        "train": ["export", "tokenizer", "world"],
    }


def test_python_dash_m_runs_the_same_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "worldforge", "compress", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "quantize" in result.stdout and "Usage: worldforge compress" in result.stdout


def test_config_show_prints_resolved_overrides(project):
    result = runner.invoke(app, ["config", "show", "-o", "project.seed=42"])
    assert result.exit_code == 0, result.output
    assert "seed: 42" in result.output


def test_config_error_is_one_clear_line_and_exit_2(project):
    result = runner.invoke(app, ["config", "show", "-o", "project.seed=abc"])
    assert result.exit_code == 2
    assert "project.seed" in result.output and "Traceback" not in result.output


def run_doctor(env_changes: dict[str, str]) -> subprocess.CompletedProcess:
    """The real console script in its own process, as a user runs it."""
    env = {**os.environ, "COLUMNS": "250", **env_changes}
    worldforge = Path(sys.executable).with_name("worldforge")
    return subprocess.run(
        [str(worldforge), "doctor"], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_doctor_passes_on_this_machine(project):
    result = run_doctor({})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("pass") >= 6 and "FAIL" not in result.stdout


def test_doctor_fails_with_fix_for_dead_tracking_server_and_bad_remote(project, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_doctor(
        {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # nothing listens on port 9
            "WORLDFORGE_DVC_REMOTE": str(blocker / "remote"),
        }
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    tracking_rows = [line for line in lines if "mlflow tracking" in line]
    assert tracking_rows and "FAIL" in tracking_rows[0]
    assert "start that MLflow server" in " ".join(result.stdout.split())
    dvc_rows = [line for line in lines if "dvc lineage" in line]
    assert dvc_rows and "FAIL" in dvc_rows[0]
    assert "WORLDFORGE_DVC_REMOTE" in result.stdout
