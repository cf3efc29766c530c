"""`worldforge compress distill`: a few-step or smaller student from a teacher model package."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from worldforge.platform.cli.common import OVERRIDES, exit_on_error, run_as_flow


def distill_command(
    config: str = typer.Argument(..., help="Preset name (configs/NAME.yaml) or a YAML path."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher package folder or models:/name@alias."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="progressive (rounds halving the steps), consistency (multistep consistency distillation) "
        "or student (a smaller DiT, distill.student.depth/width). Default: distill.method of the config.",
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="The student's sampler steps. progressive: the teacher's steps halved one or more times; "
        "consistency: a divisor of the teacher's steps. Default: distill.steps of the config.",
    ),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="Dataset whose train split is distilled on and whose held-out split evaluates.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where the student package goes (default: <root>/packages/<family>-distill-<method>-<steps>-<time>).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run with the same --out."),
    track: bool = typer.Option(
        True,
        "--track/--no-track",
        help="Record MLflow stage runs (distill, evaluate) and register the student.",
    ),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Distill a teacher into a student that takes fewer denoising steps (or is smaller), evaluate
    it with the teacher as the reference on the same held-out episodes, and register it."""
    from pydantic import ValidationError

    from worldforge.compression.distill_config import DistillConfig, DistillConfigError
    from worldforge.data.shards import default_output
    from worldforge.platform.config import describe_errors, load_config
    from worldforge.platform.project import Project

    with exit_on_error():
        resolved = load_config(config, list(overrides or []))
        chosen = {key: value for key, value in (("method", method), ("steps", steps)) if value is not None}
        try:
            distill_cfg = DistillConfig.model_validate({**resolved.distill.model_dump(), **chosen})
        except ValidationError as error:
            raise DistillConfigError(
                describe_errors(error, " / ".join(f"--{key}" for key in chosen))
            ) from None
        if out is None and resume:
            raise DistillConfigError("--resume needs --out: the folder of the interrupted run's student")
        folder = dataset or default_output(resolved.data)
        name = (
            f"{resolved.project.family}-distill-{distill_cfg.method}-{distill_cfg.steps}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}"
        )
        destination = out or Project.current().packages / name
        result = _run(
            teacher=teacher,
            config=resolved,
            distill_cfg=distill_cfg,
            dataset_path=folder,
            out=destination,
            resume=resume,
            track=track,
            register=track,
        )
    _summary(result)
    typer.echo(f"distilled package: {result['path']}")


def _run(**kwargs) -> dict:
    """Distill; in the main process (rank 0, or the only one) as the Prefect flow run
    `compress-distill`, the other ranks of a launcher join it as plain processes."""
    import os

    from worldforge.compression.distill import distill_and_register
    from worldforge.platform.cli.train import SIGNAL_EXIT
    from worldforge.training.trainer import TrainingInterrupted

    try:
        if int(os.environ.get("RANK", "0")) == 0:
            return run_as_flow("compress-distill", distill_and_register, **kwargs)
        return distill_and_register(**kwargs)
    except TrainingInterrupted as stopped:
        typer.secho(f"{stopped}, with --out {kwargs['out']}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(SIGNAL_EXIT.get(stopped.signal, 1)) from None


def _summary(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = result["metrics"]
    reference = metrics.get("reference", {})
    table = Table("", "teacher", "student", title="distillation (same held-out episodes)")
    for label, key, fmt in (
        ("denoising steps", "denoise_steps", "{:.0f}"),
        ("PSNR (dB)", "psnr_mean", "{:.2f}"),
        ("SSIM", "ssim_mean", "{:.3f}"),
        ("frames/s, denoising", "fps_denoise", "{:.1f}"),
        ("frames/s, end to end", "fps_e2e", "{:.1f}"),
        ("DiT parameters", "parameters_dit", "{:,.0f}"),
    ):
        if key in metrics and key in reference:
            table.add_row(label, fmt.format(reference[key]), fmt.format(metrics[key]))
    Console().print(table)
    if result["version"]:
        typer.echo(f"registered: version {result['version']} (stage distill)")
