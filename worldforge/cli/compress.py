"""`worldforge compress`: model package in, smaller or faster model package out.

One command per compression stage; each resolves the config, calls the stage's library function
and prints what it did. `quantize` lives here; distill and prune register theirs on `app`.
"""

from __future__ import annotations

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

app = typer.Typer(no_args_is_help=True)


@app.callback()
def compress() -> None:
    """Compress a model package (folder or models:/name@alias): distill, prune, quantize."""


@app.command("quantize")
def quantize(
    config: str = CONFIG,
    model: str = typer.Option(..., "--model", help="Model package folder or models:/name@alias to quantize."),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="modelopt (static FP8, calibrated) or torchao (dynamic / weight-only FP8). "
        "Default: quantize.backend of the config.",
    ),
    dataset: Path | None = DATASET,
    out: Path | None = out_option("quantized package", "<family>-quantize-<backend>-<time>"),
    track: bool = track_option("quantize"),
    promote: bool = PROMOTE,
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Quantize a model package to FP8 (E4M3): weights and activations of every matmul except the
    excluded layers (quantize.exclude). The package reloads with `load_package` anywhere. Then
    evaluate it against the unquantized model on the same held-out episodes, register it (stage
    quantize) and offer it to the promotion gates."""
    from pydantic import ValidationError

    from worldforge.compression.quantize.config import QuantizeConfig, QuantizeError
    from worldforge.compression.quantize.stage import STAGE, quantize_package
    from worldforge.config import describe_errors, load_config
    from worldforge.packages import load_package

    with exit_on_error():
        resolved = load_config(config, list(overrides or []))
        qcfg = resolved.quantize
        if backend is not None:
            try:
                qcfg = QuantizeConfig.model_validate({**qcfg.model_dump(), "backend": backend})
            except ValidationError as error:
                raise QuantizeError(describe_errors(error, "--backend")) from None
        result = run_compression(
            "compress-quantize",
            quantize_package,
            STAGE,
            resolved=resolved,
            model=model,
            dataset=dataset,
            track=track,
            offer=promote,
            qcfg=qcfg,
            out=out or default_package(resolved, "quantize", qcfg.backend),
        )
        path = Path(result["path"])
        _summary(load_package(path).config["quantization"])
    stage_summary(result, "unquantized", "quantized")
    typer.echo(f"quantized package: {path}")


def _summary(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    calibration = record.get("calibration")
    if calibration:
        clips, split, steps = calibration["clips"], calibration["split"], calibration["steps"]
        calibrated = f"{clips} clips of {split}, {steps} solver steps"
    else:
        calibrated = "none (weight scales from the weights, activation scales at run time)"
    table = Table(show_header=False, title="FP8 quantization")
    for field, value in (
        ("backend / recipe", f"{record['backend']} {record['recipe']} ({record['granularity']} scales)"),
        ("quantized layers", str(len(record["layers"]))),
        ("kept in high precision", ", ".join(record["excluded_layers"]) or "none"),
        ("calibration", calibrated),
        ("quantized on", record["quantized_on"]),
    ):
        table.add_row(field, value)
    Console().print(table)
