"""`worldforge compress prune`: remove heads, MLP channels and blocks from a model package."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from worldforge.platform.cli.common import OVERRIDES, exit_on_error, run_as_flow

TARGET_HELP = (
    "What the pruned DiT KEEPS (not what it loses): params=0.7 keeps at most 70% of the DiT's parameters, "
    "i.e. removes 30%; flops=0.5 keeps at most 50% of its FLOPs per frame; depth=N, heads=N (per block), "
    "mlp_hidden=N (per block) keep exactly N; combine with commas: depth=3,params=0.6. "
    "Default: prune.target of the config."
)


def prune_command(
    config: str = typer.Argument(..., help="Preset name (configs/NAME.yaml) or a YAML path."),
    model: str = typer.Option(..., "--model", help="Model package folder or models:/name@alias to prune."),
    target: str | None = typer.Option(None, "--target", help=TARGET_HELP),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Dataset of the calibration clips (default: <root>/datasets/<data.name>)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where the pruned package goes (default: <root>/packages/<family>-prune-<time>)."
    ),
    recover: bool = typer.Option(
        True,
        "--recover/--no-recover",
        help="Fine-tune with distillation from the unpruned model after pruning.",
    ),
    track: bool = typer.Option(True, "--track/--no-track", help="Record an MLflow stage run `prune`."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Score heads, MLP channels and blocks on calibration clips, cut the least important ones to
    the target, and write a smaller model package (with its new config and lineage)."""
    from pydantic import ValidationError

    from worldforge.compression.prune import PRUNING_FILE, prune_package
    from worldforge.compression.prune_config import PruneConfig, PruneConfigError, parse_target
    from worldforge.data.shards import default_output
    from worldforge.platform.config import describe_errors, load_config
    from worldforge.platform.project import Project

    with exit_on_error():
        resolved = load_config(config, list(overrides or []))
        prune_cfg = resolved.prune
        if target is not None:
            try:
                prune_cfg = PruneConfig.model_validate(
                    {**prune_cfg.model_dump(), "target": parse_target(target)}
                )
            except ValidationError as error:
                raise PruneConfigError(describe_errors(error, "--target")) from None
            except ValueError as error:  # parse_target's own message
                raise PruneConfigError(str(error)) from None
        folder = dataset or default_output(resolved.data)
        destination = (
            out
            or Project.current().packages
            / f"{resolved.project.family}-prune-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        path = run_as_flow(
            "compress-prune",
            prune_package,
            source=model,
            config=resolved,
            prune_cfg=prune_cfg,
            dataset_path=folder,
            out=destination,
            recover=recover,
            track=track,
        )
    _summary(json.loads((path / PRUNING_FILE).read_text()))
    typer.echo(f"pruned package: {path}")


def _summary(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    plan, before, after = record["plan"], record["before"], record["after"]
    table = Table("", "unpruned", "pruned", "kept", title=f"pruning ({record['config']['method']})")
    for label, key, scale in (
        ("DiT parameters", "parameters_dit", 1),
        ("DiT GFLOPs/frame", "flops_per_frame_dit", 1e9),
        ("GFLOPs/frame (all)", "flops_per_frame", 1e9),
    ):
        table.add_row(
            label,
            f"{before[key] / scale:,.4g}",
            f"{after[key] / scale:,.4g}",
            f"{after[key] / before[key]:.1%}",
        )
    blocks = plan["blocks"]
    table.add_row("depth", str(len(plan["source_heads"])), str(len(blocks)), "")
    table.add_row(
        "heads per block", _widths(plan["source_heads"]), _widths([len(b["heads"]) for b in blocks]), ""
    )
    table.add_row(
        "MLP width per block",
        _widths(plan["source_channels"]),
        _widths([len(b["channels"]) for b in blocks]),
        "",
    )
    Console().print(table)
    recovery = record["recovery"]
    if recovery:
        typer.echo(
            f"recovery: {recovery['steps']} steps ({recovery['stopped']}), "
            f"loss {recovery['loss_first']:.4g} -> {recovery['loss_last']:.4g}"
        )
    else:
        typer.echo("recovery: none (--no-recover or prune.recovery.steps=0)")


def _widths(values: list[int]) -> str:
    return f"{values[0]} (all)" if len(set(values)) == 1 else ", ".join(map(str, values))
