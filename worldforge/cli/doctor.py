"""`worldforge doctor`: check every real component live and say how to fix what fails."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import typer

VERSIONED = ["torch", "deepspeed", "mlflow", "dvc", "prefect", "webdataset", "torchao", "modelopt", "typer"]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_versions() -> Check:
    import importlib

    found, missing = [], []
    for name in VERSIONED:
        try:
            module = importlib.import_module(name)
            found.append(f"{name} {getattr(module, '__version__', '?')}")
        except Exception as error:  # noqa: BLE001 - an import can fail with anything, not only ImportError
            missing.append(f"{name} ({type(error).__name__}: {error})")
    if missing:
        return Check("packages", False, "; ".join(missing), "reinstall: make install (or pip install -e .)")
    return Check("packages", True, ", ".join(found))


def check_torch() -> Check:
    import torch

    from worldforge.core.runtime import select_device

    device = select_device()
    x = torch.randn(64, 64, device=device)
    value = float((x @ x.T).trace())
    detail = f"device {device}, matmul ok ({value:.1f}), threads {torch.get_num_threads()}"
    if device.type == "cuda":
        detail += f", {torch.cuda.get_device_name()}"
    return Check("torch device", True, detail)


def check_deepspeed() -> Check:
    from worldforge.core.runtime import configure_deepspeed_env

    configure_deepspeed_env()
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    return Check(
        "deepspeed accelerator",
        True,
        f"{accelerator.device_name()} (backend {accelerator.communication_backend_name()}, "
        f"DS_ACCELERATOR={os.environ.get('DS_ACCELERATOR', 'auto')})",
    )


def check_tracking() -> Check:
    import mlflow

    from worldforge.core import tracking

    uri = tracking.configure()
    fix = (
        f"tracking URI is {uri}: start that MLflow server, or unset MLFLOW_TRACKING_URI to use the "
        "embedded SQLite store under the project root"
    )
    try:
        experiment_id = tracking.ensure_experiment("worldforge-doctor")
        client = mlflow.MlflowClient()
        run = client.create_run(experiment_id, run_name="doctor")
        client.log_metric(run.info.run_id, "probe", 1.0)
        value = client.get_run(run.info.run_id).data.metrics["probe"]
        client.delete_run(run.info.run_id)
    except Exception as error:  # noqa: BLE001 - any failure is the check's answer
        return Check("mlflow tracking", False, f"{uri}: {type(error).__name__}: {str(error)[:200]}", fix)
    return Check("mlflow tracking", value == 1.0, f"{uri}: created, logged, read back and deleted a run", fix)


def check_dvc() -> Check:
    from worldforge.core.lineage import DataRepo, LineageError
    from worldforge.core.project import Project

    project = Project.current()
    repo = DataRepo(project)
    probe = project.root / ".worldforge-doctor"
    fix = (
        f"DVC remote is {repo.remote_url}: make it exist and writable, or set WORLDFORGE_DVC_REMOTE "
        "to a writable remote URL"
    )
    try:
        probe.mkdir(parents=True, exist_ok=True)
        (probe / "probe.txt").write_text(f"doctor {time.time()}\n")
        md5 = repo.track(probe)
        repo.push(probe)
        status = repo.status()
    except (LineageError, OSError) as error:
        return Check("dvc lineage", False, str(error)[:300], fix)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
        repo.dvc_file(probe).unlink(missing_ok=True)
    return Check("dvc lineage", True, f"repo {project.root}, tracked + pushed a probe ({md5[:12]}), status {status or 'clean'}")


def check_prefect() -> Check:
    from worldforge.core.project import Project
    from worldforge.core.runtime import configure_prefect_env

    configure_prefect_env(Project.current().root)
    from prefect import flow

    @flow(name="worldforge-doctor", persist_result=False)
    def probe() -> int:
        return 42

    api = os.environ.get("PREFECT_API_URL", "ephemeral API")
    fix = f"Prefect API is {api}: start the server (prefect server start) or unset PREFECT_API_URL"
    try:
        value = probe()
    except Exception as error:  # noqa: BLE001 - any failure is the check's answer
        return Check("prefect", False, f"{api}: {type(error).__name__}: {str(error)[:200]}", fix)
    return Check("prefect", value == 42, f"{api}: a flow run completed (PREFECT_HOME={os.environ['PREFECT_HOME']})", fix)


CHECKS: list[Callable[[], Check]] = [check_versions, check_torch, check_deepspeed, check_tracking, check_dvc, check_prefect]


def run_checks() -> list[Check]:
    # A dead tracking server should fail fast, not retry for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, False, f"{type(error).__name__}: {str(error)[:300]}", "see the error above"))
    return results


def doctor() -> None:
    """Check each real component live and print a pass/fail table with the fix for each failure.

    Checks: packages, torch device, DeepSpeed accelerator, MLflow tracking (creates and deletes a
    run), DVC (tracks and pushes a probe), Prefect (runs a flow on its API). Exits 1 on any failure."""
    from rich.console import Console
    from rich.table import Table

    from worldforge.core.project import Project

    console = Console()
    console.print(f"project root: {Project.current().root}")
    with console.status("checking components..."):
        results = run_checks()
    table = Table(title="worldforge doctor")
    for column in ("component", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for result in results:
        status = "[green]pass[/green]" if result.ok else "[red]FAIL[/red]"
        table.add_row(result.name, status, result.detail, "" if result.ok else result.fix)
    console.print(table)
    if not all(result.ok for result in results):
        raise typer.Exit(1)
