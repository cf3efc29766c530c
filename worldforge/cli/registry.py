"""`worldforge registry`: list, inspect, promote and roll back registered model versions."""

from __future__ import annotations

import typer

from worldforge.cli.common import OVERRIDES, exit_on_error, run_as_flow

app = typer.Typer(
    help="The MLflow model registry: versions, aliases (candidate, champion), promotion decisions.",
    no_args_is_help=True,
)

WIDE_METRICS = ("psnr_mean", "baseline_psnr_mean", "fps_e2e", "latency_ms_median", "parameters")


def _number(version, name: str) -> float | None:
    value = version.tags.get(f"metric.{name}")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _metric(version, name: str) -> str:
    number = _number(version, name)
    if number is None:
        return "-"
    return f"{number:,.0f}" if name == "parameters" else f"{number:.2f}"


def _ratio(version, name: str) -> str:
    """`0.39x`: a position error as a multiple of copy-last-frame's on the same episodes."""
    model, baseline = _number(version, name), _number(version, f"baseline_{name}")
    return f"{model / baseline:.2f}x" if model is not None and baseline else "-"


def _psnr(version) -> str:
    model, baseline = _number(version, "psnr_mean"), _number(version, "baseline_psnr_mean")
    if model is None:
        return "-"
    return f"{model:.2f} ({model - baseline:+.2f})" if baseline is not None else f"{model:.2f}"


def _version_record(version, aliases: list[str]) -> dict:
    return {
        "version": str(version.version),
        "aliases": aliases,
        "stage": version.tags.get("stage"),
        "metrics": {k.removeprefix("metric."): v for k, v in version.tags.items() if k.startswith("metric.")},
        "last_decision": version.tags.get("promotion.last_outcome"),
        "failed_checks": version.tags.get("promotion.failed_checks"),
        "package_md5": version.tags.get("package.md5"),
        "package_dvc_md5": version.tags.get("package.dvc_md5"),
    }


@app.command("list")
def list_command(
    family: str | None = typer.Argument(None, help="A model family: list its versions."),
    wide: bool = typer.Option(False, "--wide", help="Every metric column (needs a wide terminal)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output instead of a table."),
) -> None:
    """Registered model families, or the versions of one family with their key metrics: PSNR (and
    its gain over copy-last-frame), agent and ball position error as a multiple of copy-last's,
    end-to-end frames/s and the last promotion decision. The table fits 80 columns; --wide shows
    more, --json everything."""
    import json

    from rich.console import Console
    from rich.table import Table

    from worldforge import registry

    console = Console()
    with exit_on_error():
        if family is None:
            families = [
                {
                    "family": model.name,
                    "versions": len(registry.versions(model.name)),
                    "aliases": {alias: str(number) for alias, number in (model.aliases or {}).items()},
                }
                for model in registry.families()
            ]
            if as_json:
                typer.echo(json.dumps(families, indent=2))
                return
            table = Table(title="registered model families")
            for column in ("family", "versions", "champion", "candidate"):
                table.add_column(column)
            for row in families:
                aliases = row["aliases"]
                table.add_row(row["family"], str(row["versions"]), aliases.get("champion", "-"), aliases.get("candidate", "-"))
            console.print(table)
            return
        versions = registry.versions(family)
    if as_json:
        typer.echo(json.dumps([_version_record(v, aliases) for v, aliases in versions], indent=2))
        return
    if wide:
        columns = ("version", "aliases", "stage", *WIDE_METRICS, "agent x", "balls x", "last decision")
    else:
        columns = ("v", "stage", "PSNR (vs copy)", "agent", "balls", "fps", "decision", "aliases")
    table = Table(title=f"{family}: versions", caption="agent, balls: position error as a multiple of copy-last-frame's")
    for column in columns:
        table.add_column(column, no_wrap=column != "aliases", overflow="fold")
    for version, aliases in versions:
        decision = version.tags.get("promotion.last_outcome", "-")
        errors = (_ratio(version, "agent_position_error"), _ratio(version, "object_position_error"))
        if wide:
            metrics = (_metric(version, name) for name in WIDE_METRICS)
            table.add_row(str(version.version), ", ".join(aliases) or "-", version.tags.get("stage", "-"), *metrics, *errors, decision)
        else:
            fps = _number(version, "fps_e2e")
            table.add_row(
                str(version.version),
                version.tags.get("stage", "-"),
                _psnr(version),
                *errors,
                f"{fps:.0f}" if fps is not None else "-",
                decision,
                ", ".join(aliases) or "-",
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

    from worldforge import registry

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

    from worldforge import registry
    from worldforge.config import load_config

    with exit_on_error():
        gates = load_config(config, list(overrides or [])).registry
        decision = run_as_flow("registry-promote", registry.promote, family=family, version=version, config=gates)
    print_decision(decision, Console())
    if decision.outcome not in ("promoted", "unchanged"):
        raise typer.Exit(1)


@app.command("rollback")
def rollback(family: str = typer.Argument(..., help="The model family.")) -> None:
    """Move `champion` back to the previous champion (the history keeps both events)."""
    from worldforge import registry

    with exit_on_error():
        before = registry.alias_version(family, registry.CHAMPION)
        version = registry.rollback(family)
    typer.echo(f"{family}: champion rolled back from version {before} to version {version}")
