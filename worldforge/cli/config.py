"""`worldforge config`: see the resolved configuration of a preset."""

from __future__ import annotations

import typer

from worldforge.cli.common import OVERRIDES, exit_on_error

app = typer.Typer(help="Show presets and resolved configs.", no_args_is_help=True)


@app.command("show")
def show(
    preset: str | None = typer.Argument(None, help="Preset name (configs/NAME.yaml) or a YAML path."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Print the fully resolved config (defaults + preset + overrides) as YAML."""
    from rich.console import Console
    from rich.syntax import Syntax

    from worldforge.config import dump_yaml, load_config

    with exit_on_error():
        config = load_config(preset, overrides)
    Console().print(Syntax(dump_yaml(config), "yaml", theme="ansi_dark", background_color="default"))


@app.command("list")
def list_() -> None:
    """List the preset names that `show` and every stage accept."""
    from worldforge.config import list_presets, resolve_preset

    for name in list_presets():
        typer.echo(f"{name:20s} {resolve_preset(name)}")
