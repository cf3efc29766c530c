"""`worldforge pipeline`: run, serve on a schedule, or deploy the end-to-end flow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from worldforge.platform.cli.common import OVERRIDES, exit_on_error, prefect_ready

app = typer.Typer(help="The end-to-end train-and-compress pipeline (Prefect).", no_args_is_help=True)

SOURCE = Path(__file__).resolve().parents[3]
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
        from worldforge.platform.config import load_config

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
    Kubernetes work pools) with the Prefect server at PREFECT_API_URL."""
    root = prefect_ready()
    if not os.environ.get("PREFECT_API_URL"):
        typer.secho(
            "error: PREFECT_API_URL is not set; deployments need a Prefect server "
            "(prefect server start, then export PREFECT_API_URL=http://127.0.0.1:4200/api)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
    command += [arg for name in names or [] for arg in ("--name", name)] or ["--all"]
    env = {**os.environ, "WORLDFORGE_SOURCE": str(SOURCE), "WORLDFORGE_ROOT": str(root)}
    raise typer.Exit(subprocess.run(command, cwd=SOURCE, env=env, check=False).returncode)
