"""`worldforge compress prune`: remove heads, MLP channels and blocks from a model package."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from worldforge.cli.common import (
    CONFIG,
    DATASET,
    OVERRIDES,
    PROMOTE,
    default_package,
    exit_on_error,
    out_option,
    run_compression,
    stage_summary,
    track_option,
)

TARGET_HELP = (
    "What the pruned DiT KEEPS (not what it loses): params=0.7 keeps at most 70% of the DiT's parameters, "
    "i.e. removes 30%; flops=0.5 keeps at most 50% of its FLOPs per frame; depth=N, heads=N (per block), "
    "mlp_hidden=N (per block) keep exactly N; combine with commas: depth=3,params=0.6. "
    "Default: prune.target of the config."
)


def prune_command(
    config: str = CONFIG,
    model: str = typer.Option(..., "--model", help="Model package folder or models:/name@alias to prune."),
    target: str | None = typer.Option(None, "--target", help=TARGET_HELP),
    dataset: Path | None = DATASET,
    out: Path | None = out_option("pruned package", "<family>-prune-<time>"),
    recover: bool = typer.Option(
        True,
        "--recover/--no-recover",
        help="Fine-tune with distillation from the unpruned model after pruning.",
    ),
    track: bool = track_option("prune"),
    promote: bool = PROMOTE,
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Score heads, MLP channels and blocks on calibration clips, cut the least important ones to
    the target, and write a smaller model package (with its new config and lineage); then evaluate
    it against the unpruned model on the same held-out episodes, register it (stage prune) and
    offer it to the promotion gates."""
    from pydantic import ValidationError

    from worldforge.compression.prune.config import PruneConfig, PruneConfigError, parse_target
    from worldforge.compression.prune.stage import PRUNING_FILE, STAGE, prune_package
    from worldforge.config import describe_errors, load_config

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
        result = run_compression(
            "compress-prune",
            prune_package,
            STAGE,
            resolved=resolved,
            model=model,
            dataset=dataset,
            track=track,
            offer=promote,
            prune_cfg=prune_cfg,
            out=out or default_package(resolved, "prune"),
            recover=recover,
        )
    path = Path(result["path"])
    _summary(json.loads((path / PRUNING_FILE).read_text()))
    stage_summary(result, "unpruned", "pruned")
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
