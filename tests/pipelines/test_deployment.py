"""A real Prefect server and process worker on loopback: `worldforge pipeline deploy` registers the
deployments of infra/prefect/prefect.yaml with their cron schedules, and a triggered run of
train_and_compress (tiny preset) is picked up by the worker and completes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from worldforge.core.runtime import free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def wait_for(url: str, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout}s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s: a worker finishing its poll loop may outlive the grace."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-server"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the server writes it until the fixture ends
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", server)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop(server)
        log.close()


def test_deploy_schedule_trigger_and_complete_on_a_worker(prefect_server, project, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    remote = tmp_path / "team-remote"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "WORLDFORGE_ROOT": str(project.root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlflow.db'}",
        "WORLDFORGE_DVC_REMOTE": str(remote),
    }
    subprocess.run(
        [str(BIN / "prefect"), "work-pool", "create", "worldforge-process", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
    )
    deployed = subprocess.run(
        [str(BIN / "worldforge"), "pipeline", "deploy"],  # all three; no worldforge-k8s pool exists
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = deployed.stdout + deployed.stderr
    assert deployed.returncode == 0, output  # a missing pool is skipped with a warning, not a failure
    assert "skipping nightly-train-and-compress-k8s: work pool 'worldforge-k8s' does not exist" in output
    assert "prefect work-pool create worldforge-k8s --type kubernetes" in output
    assert "deployed: nightly-train-and-compress, weekly-dataset-refresh" in output

    worker_log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - the worker writes it until the finally
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "worldforge-process", "--type", "process"],
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            flow_run = run_deployment(
                "train_and_compress/nightly-train-and-compress",
                parameters={"preset": "tiny"},
                timeout=600,
            )

            async def read_schedules():
                async with get_client() as client:
                    deployment = await client.read_deployment_by_name(
                        "train_and_compress/nightly-train-and-compress"
                    )
                    return [
                        schedule.schedule.cron for schedule in deployment.schedules
                    ], deployment.job_variables

            import asyncio

            crons, job_variables = asyncio.run(read_schedules())
    finally:
        stop(worker)
        worker_log.close()
    assert flow_run.state.is_completed(), (tmp_path / "worker.log").read_text()[-4000:]
    assert crons == ["0 2 * * *"]
    # flow runs carry the tracking server and DVC remote the deployment was made with
    assert job_variables["env"]["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]
    assert job_variables["env"]["WORLDFORGE_DVC_REMOTE"] == str(remote)
    assert remote.is_dir() and any(
        p.is_file() for p in remote.rglob("*")
    )  # the run pushed to the team's remote
    packages = [
        p for p in (project.root / "packages").glob("worldforge-sim-tiny-ci-pretrain_world-*") if p.is_dir()
    ]
    assert packages and (packages[0] / "metrics.json").is_file()
