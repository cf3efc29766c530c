"""`worldforge compress`: model package in, smaller or faster model package out.

One command per compression stage; each resolves the config, calls the stage's library function
and prints what it did. `quantize` lives here; distill and prune register theirs on `app`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from worldforge.platform.cli.common import OVERRIDES, exit_on_error, run_as_flow

app = typer.Typer(no_args_is_help=True)


@app.callback()
def compress() -> None:
    """Compress a model package (folder or models:/name@alias): distill, prune, quantize."""


@app.command("quantize")
def quantize(
    config: str = typer.Argument(..., help="Preset name (configs/NAME.yaml) or a YAML path."),
    model: str = typer.Option(..., "--model", help="Model package folder or models:/name@alias to quantize."),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="modelopt (static FP8, calibrated) or torchao (dynamic / weight-only FP8). "
        "Default: quantize.backend of the config.",
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Dataset of the calibration clips (default: <root>/datasets/<data.name>)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where the quantized package goes "
        "(default: <root>/packages/<family>-quantize-<backend>-<time>).",
    ),
    track: bool = typer.Option(True, "--track/--no-track", help="Record an MLflow stage run `quantize`."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Quantize a model package to FP8 (E4M3): weights and activations of every matmul except the
    excluded layers (quantize.exclude). The package reloads with `load_package` anywhere."""
    from pydantic import ValidationError

    from worldforge.compression.config import QuantizeConfig, QuantizeError
    from worldforge.compression.quantize import quantize_package
    from worldforge.data.shards import default_output
    from worldforge.platform.config import describe_errors, load_config
    from worldforge.platform.packages import load_package
    from worldforge.platform.project import Project

    with exit_on_error():
        resolved = load_config(config, list(overrides or []))
        qcfg = resolved.quantize
        if backend is not None:
            try:
                qcfg = QuantizeConfig.model_validate({**qcfg.model_dump(), "backend": backend})
            except ValidationError as error:
                raise QuantizeError(describe_errors(error, "--backend")) from None
        folder = dataset or default_output(resolved.data)
        name = f"{resolved.project.family}-quantize-{qcfg.backend}-{time.strftime('%Y%m%d-%H%M%S')}"
        destination = out or Project.current().packages / name
        path = run_as_flow(
            "compress-quantize",
            quantize_package,
            source=model,
            config=resolved,
            qcfg=qcfg,
            dataset_path=folder,
            out=destination,
            track=track,
        )
        _summary(load_package(path).config["quantization"])
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
