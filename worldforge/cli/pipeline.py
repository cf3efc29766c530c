"""`worldforge pipeline`: run, serve on a schedule, or deploy the end-to-end flow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from worldforge.cli.common import OVERRIDES, exit_on_error, prefect_ready

app = typer.Typer(help="The end-to-end train-and-compress pipeline (Prefect).", no_args_is_help=True)

SOURCE = Path(__file__).resolve().parents[2]
PREFECT_FILE = SOURCE / "infra" / "prefect" / "prefect.yaml"


@app.command("run")
def run(
    config: str = typer.Argument("quickstart", help="Preset name (configs/NAME.yaml) or a YAML path."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Run train_and_compress once: dataset -> tokenizer -> world model -> evaluate -> register ->
    promote. Finished stages whose inputs did not change are taken from the cache."""
    root = prefect_ready()
    from worldforge.pipelines.flows import train_and_compress
    from worldforge.pipelines.summary import print_summary

    with exit_on_error():
        result = train_and_compress(preset=config, overrides=overrides or [], root=str(root))
    print_summary(result)


@app.command("serve")
def serve(
    config: str = typer.Argument("quickstart", help="Preset name or YAML path."),
    cron: str = typer.Option("0 2 * * *", "--cron", help="Cron schedule (UTC), e.g. '0 2 * * *' for 02:00 nightly."),
    name: str = typer.Option("train-and-compress", "--name", help="Deployment name."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Serve train_and_compress on a cron schedule from this process (Ctrl-C stops it).

    Needs a Prefect server (PREFECT_API_URL); runs happen in this process when they are due."""
    root = prefect_ready()
    from worldforge.pipelines.flows import train_and_compress

    with exit_on_error():
        from worldforge.config import load_config

        load_config(config, overrides or [])  # fail now, not at 02:00
    train_and_compress.serve(
        name=name, cron=cron, parameters={"preset": config, "overrides": overrides or [], "root": str(root)}
    )


@app.command("deploy")
def deploy(
    names: list[str] | None = typer.Option(
        None, "--name", "-n", help="Deployment(s) from infra/prefect/prefect.yaml (default: all)."
    ),
    prefect_file: Path = typer.Option(PREFECT_FILE, "--prefect-file", help="The deployments file."),
) -> None:
    """Register the deployments of infra/prefect/prefect.yaml (cron schedules, process and
    Kubernetes work pools) with the Prefect server at PREFECT_API_URL, one by one: a deployment
    whose work pool does not exist yet is skipped with a warning that says how to create it; the
    command exits non-zero only when a deployment fails, and says which. Flow runs get the
    project root, MLFLOW_TRACKING_URI and WORLDFORGE_DVC_REMOTE of this shell."""
    import yaml

    root = prefect_ready()
    if not os.environ.get("PREFECT_API_URL"):
        typer.secho(
            "error: PREFECT_API_URL is not set; deployments need a Prefect server "
            "(prefect server start, then export PREFECT_API_URL=http://127.0.0.1:4200/api)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    declared = {d["name"]: d for d in (yaml.safe_load(prefect_file.read_text()) or {}).get("deployments", [])}
    unknown = sorted(set(names or []) - set(declared))
    if unknown:
        typer.secho(f"error: {prefect_file}: no deployment {unknown}; known: {sorted(declared)}", fg="red", err=True)
        raise typer.Exit(2)
    for variable in ("MLFLOW_TRACKING_URI", "WORLDFORGE_DVC_REMOTE"):
        if not os.environ.get(variable):
            typer.secho(
                f"warning: {variable} is not set: process-pool flow runs will use the embedded default under "
                f"{root} (set it to the team's server / remote before deploying)",
                fg=typer.colors.YELLOW,
                err=True,
            )
    pools = _work_pools()
    env = {
        **os.environ,
        "WORLDFORGE_SOURCE": str(SOURCE),
        "WORLDFORGE_ROOT": str(root),
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", ""),
        "WORLDFORGE_DVC_REMOTE": os.environ.get("WORLDFORGE_DVC_REMOTE", ""),
    }
    deployed, skipped, failed = [], [], []
    for name in names or list(declared):
        pool = ((declared[name].get("work_pool") or {}).get("name")) or "?"
        if pool not in pools:
            kind = "kubernetes" if "k8s" in pool else "process"
            typer.secho(
                f"warning: skipping {name}: work pool {pool!r} does not exist on {os.environ['PREFECT_API_URL']} "
                f"(create it: prefect work-pool create {pool} --type {kind}; then deploy again)",
                fg=typer.colors.YELLOW,
                err=True,
            )
            skipped.append(name)
            continue
        command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
        code = subprocess.run([*command, "--name", name], cwd=SOURCE, env=env, check=False).returncode
        (deployed if code == 0 else failed).append(name)
        if code:
            typer.secho(f"error: deploying {name} failed (prefect deploy exit {code}; see above)", fg="red", err=True)
    typer.echo(f"deployed: {', '.join(deployed) or 'none'}; skipped: {', '.join(skipped) or 'none'}")
    if failed:
        typer.secho(f"error: {len(failed)} deployment(s) failed: {', '.join(failed)}", fg="red", err=True)
        raise typer.Exit(1)


def _work_pools() -> set[str]:
    """The names of the work pools on the Prefect server."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> set[str]:
        async with get_client() as client:
            return {pool.name for pool in await client.read_work_pools()}

    return asyncio.run(read())
