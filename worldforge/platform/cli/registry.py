"""`worldforge registry`: list, inspect, promote and roll back registered model versions."""

from __future__ import annotations

import typer

from worldforge.platform.cli.common import OVERRIDES, exit_on_error, run_as_flow

app = typer.Typer(
    help="The MLflow model registry: versions, aliases (candidate, champion), promotion decisions.",
    no_args_is_help=True,
)

SHOWN_METRICS = ("psnr_mean", "baseline_psnr_mean", "fps_e2e", "latency_ms_median", "parameters")


def _metric(version, name: str) -> str:
    value = version.tags.get(f"metric.{name}")
    if value is None:
        return "-"
    number = float(value)
    return f"{number:,.0f}" if name == "parameters" else f"{number:.2f}"


@app.command("list")
def list_command(
    family: str | None = typer.Argument(None, help="A model family: list its versions."),
) -> None:
    """Registered model families, or the versions of one family with their key metrics."""
    from rich.console import Console
    from rich.table import Table

    from worldforge.platform import registry

    console = Console()
    with exit_on_error():
        if family is None:
            table = Table(title="registered model families")
            for column in ("family", "versions", "champion", "candidate"):
                table.add_column(column)
            for model in registry.families():
                count = len(registry.versions(model.name))
                aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
                table.add_row(
                    model.name, str(count), aliases.get("champion", "-"), aliases.get("candidate", "-")
                )
            console.print(table)
            return
        versions = registry.versions(family)
    table = Table(title=f"{family}: versions")
    for column in ("version", "aliases", "stage", *SHOWN_METRICS, "last decision"):
        table.add_column(column)
    for version, aliases in versions:
        table.add_row(
            str(version.version),
            ", ".join(aliases) or "-",
            version.tags.get("stage", "-"),
            *(_metric(version, name) for name in SHOWN_METRICS),
            version.tags.get("promotion.last_outcome", "-"),
        )
    console.print(table)


@app.command("show")
def show(
    family: str = typer.Argument(..., help="The model family."),
    version: str = typer.Argument("champion", help="A version number or an alias (champion, candidate)."),
) -> None:
    """One version: tags, recorded metrics, every promotion decision; and the champion history."""
    from rich.console import Console
    from rich.table import Table

    from worldforge.platform import registry

    console = Console()
    with exit_on_error():
        found = registry.get_version(family, version)
        history = registry.champion_history(family)
    tags = Table(
        title=f"{family} version {found.version} ({', '.join(found.aliases) or 'no alias'})",
        show_header=False,
    )
    tags.add_column("tag", style="bold")
    tags.add_column("value", overflow="fold")
    for key in sorted(k for k in found.tags if not k.startswith(registry.DECISION_TAG)):
        tags.add_row(key, found.tags[key])
    console.print(tags)
    for decision in registry.decisions(found):
        print_decision(decision, console)
    if history:
        table = Table(title=f"{family}: champion history")
        for column in ("at", "action", "champion", "previous"):
            table.add_column(column)
        for event in history:
            table.add_row(event["at"], event["action"], event["version"], str(event["previous"] or "-"))
        console.print(table)


def print_decision(decision, console) -> None:
    from rich.table import Table

    colour = "green" if decision.promoted else "red" if decision.outcome == "rejected" else "yellow"
    title = (
        f"[{colour}]{decision.outcome}[/{colour}] version {decision.version} at {decision.decided_at}: "
        "champion "
        f"{decision.champion_before or '-'} -> {decision.champion_after or '-'} ({decision.store})"
    )
    table = Table(title=title)
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in decision.checks:
        status = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]"}.get(check.status, check.status)
        table.add_row(check.name, status, check.detail)
    console.print(table)


@app.command("promote")
def promote(
    family: str = typer.Argument(..., help="The model family."),
    version: str = typer.Argument(..., help="The version to promote to champion."),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Preset or YAML whose `registry` section holds the gates (default: built-in).",
    ),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Check the promotion gates against the current champion; move `champion` only if all pass.
    The decision is recorded on the version either way. Exits 1 when the version was not promoted."""
    from rich.console import Console

    from worldforge.platform import registry
    from worldforge.platform.config import load_config

    with exit_on_error():
        gates = load_config(config, list(overrides or [])).registry
        decision = run_as_flow("registry-promote", registry.promote, family=family, version=version, config=gates)
    print_decision(decision, Console())
    if decision.outcome not in ("promoted", "unchanged"):
        raise typer.Exit(1)


@app.command("rollback")
def rollback(family: str = typer.Argument(..., help="The model family.")) -> None:
    """Move `champion` back to the previous champion (the history keeps both events)."""
    from worldforge.platform import registry

    with exit_on_error():
        before = registry.alias_version(family, registry.CHAMPION)
        version = registry.rollback(family)
    typer.echo(f"{family}: champion rolled back from version {before} to version {version}")
