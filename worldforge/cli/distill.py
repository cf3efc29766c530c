"""`worldforge compress distill`: a few-step or smaller student from a teacher model package."""

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
    run_as_flow,
    stage_summary,
    track_option,
)


def distill_command(
    config: str = CONFIG,
    teacher: str = typer.Option(..., "--teacher", help="Teacher package folder or models:/name@alias."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="progressive (rounds halving the steps), consistency (multistep consistency distillation), "
        "student (a smaller DiT, distill.student.depth/width) or dmd (distribution matching: sharp 1-4 step "
        "samples, distill.dmd.*). Default: distill.method of the config.",
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="The student's sampler steps. progressive: the teacher's steps halved one or more times; "
        "consistency: a divisor of the teacher's steps; dmd: any. Default: distill.steps of the config.",
    ),
    dataset: Path | None = DATASET,
    out: Path | None = out_option("student package", "<family>-distill-<method>-<steps>-<time>"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run with the same --out."),
    track: bool = track_option("distill"),
    promote: bool = PROMOTE,
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Distill a teacher into a student that takes fewer denoising steps (or is smaller), evaluate
    it with the teacher as the reference on the same held-out episodes, register it (stage distill)
    and offer it to the promotion gates."""
    from pydantic import ValidationError

    from worldforge.compression.distill.config import DistillConfig, DistillConfigError
    from worldforge.config import describe_errors, load_config
    from worldforge.data.shards import default_output

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
        destination = out or default_package(resolved, "distill", distill_cfg.method, str(distill_cfg.steps))
        result = _run(
            teacher=teacher,
            config=resolved,
            distill_cfg=distill_cfg,
            dataset_path=folder,
            out=destination,
            resume=resume,
            track=track,
            offer=promote,
        )
    stage_summary(result, "teacher", "student")
    typer.echo(f"distilled package: {result['path']}")


def _run(**kwargs) -> dict:
    """Distill; in the main process (rank 0, or the only one) as the Prefect flow run
    `compress-distill`, the other ranks of a launcher join it as plain processes."""
    import os

    from worldforge.cli.train import SIGNAL_EXIT
    from worldforge.compression.distill.stage import distill_and_register
    from worldforge.training.trainer import TrainingInterrupted

    try:
        if int(os.environ.get("RANK", "0")) == 0:
            return run_as_flow("compress-distill", distill_and_register, **kwargs)
        return distill_and_register(**kwargs)
    except TrainingInterrupted as stopped:
        typer.secho(f"{stopped}, with --out {kwargs['out']}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(SIGNAL_EXIT.get(stopped.signal, 1)) from None
