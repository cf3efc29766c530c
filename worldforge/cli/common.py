"""Pieces every CLI group shares: the override option and turning errors into clean exits."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from worldforge.errors import WorldforgeError

OVERRIDES = typer.Option(
    None, "--override", "-o", help="Dotted override KEY.PATH=VALUE (repeatable), e.g. -o train.lr=3e-4."
)
CONFIG = typer.Argument(..., help="Preset name (configs/NAME.yaml) or a YAML path.")
DATASET = typer.Option(
    None,
    "--dataset",
    help="Dataset: calibration/training clips from its train split, evaluation on its held-out split "
    "(default: <root>/datasets/<data.name>).",
)
PROMOTE = typer.Option(
    True,
    "--promote/--no-promote",
    help="Offer the registered version to the promotion gates (champion moves only if every gate passes; "
    "the decision is recorded either way).",
)


def track_option(stage: str):
    """`--track/--no-track` of a compression command."""
    return typer.Option(
        True, "--track/--no-track", help=f"Record MLflow stage runs ({stage}, evaluate) and register the result."
    )


def out_option(what: str, name: str):
    """`--out` of a command whose package goes by default to <root>/packages/`name`."""
    return typer.Option(None, "--out", help=f"Where the {what} goes (default: <root>/packages/{name}).")


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Known user errors (bad config, bad package, bad data) print one clear message and exit 2."""
    try:
        yield
    except WorldforgeError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def prefect_ready():
    """The project root, with Prefect's home and settings pointed at it (before Prefect is imported)."""
    from worldforge.core.project import Project
    from worldforge.core.runtime import configure_deepspeed_env, configure_prefect_env

    root = Project.current().root
    configure_prefect_env(root)
    configure_deepspeed_env()
    return root


class _BriefKnownErrors(logging.Formatter):
    """A console formatter that prints a worldforge error (bad input: config, package, data) as
    its one-line message, without the traceback Prefect's engine attaches; the flow run's own log
    (the API) keeps the traceback. `worldforge --verbose` keeps it on the console too."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and isinstance(record.exc_info[1], WorldforgeError):
            saved = record.exc_info, record.exc_text
            record.exc_info, record.exc_text = None, None
            try:
                return self.inner.format(record)
            finally:
                record.exc_info, record.exc_text = saved
        return self.inner.format(record)


def brief_console_errors() -> None:
    """Put `_BriefKnownErrors` on every console handler of Prefect's loggers (unless --verbose)."""
    if os.environ.get("WORLDFORGE_VERBOSE"):
        return
    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict))]:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__ == "PrefectConsoleHandler" and not isinstance(
                handler.formatter, _BriefKnownErrors
            ):
                handler.setFormatter(_BriefKnownErrors(handler.formatter))


def run_as_flow(name: str, function, /, **kwargs):
    """Run one library call as a Prefect flow run named `name`: on Prefect's ephemeral API by
    default, on the server at PREFECT_API_URL when set. Returns the call's result; its errors
    propagate unchanged (so `exit_on_error` still prints them cleanly)."""
    import functools

    prefect_ready()
    from prefect import flow
    from prefect.states import Failed

    caught: list[WorldforgeError] = []

    @functools.wraps(function)
    def body(**arguments):
        brief_console_errors()  # Prefect's console handlers exist once the run (and its API) started
        try:
            return function(**arguments)
        except WorldforgeError as error:
            # Bad input: the run fails with the message, without a traceback in Prefect's log.
            caught.append(error)
            return Failed(message=f"{type(error).__name__}: {error}")

    staged = flow(name=name, log_prints=True, persist_result=False, validate_parameters=False)(body)
    state = staged(return_state=True, **kwargs)
    if caught:
        raise caught[0]
    return state.result()


SUMMARY_ROWS = (
    ("denoising steps", "denoise_steps", "{:.0f}"),
    ("PSNR (dB)", "psnr_mean", "{:.2f}"),
    ("SSIM", "ssim_mean", "{:.3f}"),
    ("sharpness (1 = as sharp as the truth)", "sharpness_mean", "{:.3f}"),
    ("realism PSNR at step 8 (dB)", "realism_psnr_h8", "{:.2f}"),
    ("agent position error", "agent_position_error", "{:.4f}"),
    ("ball position error", "object_position_error", "{:.4f}"),
    ("frames/s, denoising", "fps_denoise", "{:.1f}"),
    ("frames/s, end to end", "fps_e2e", "{:.1f}"),
    ("DiT parameters", "parameters_dit", "{:,.0f}"),
)


def stage_summary(result: dict, parent: str, child: str) -> None:
    """What a compression command ends with: the model against its parent on the same held-out
    episodes, its registry version and the gate decision with the checks that failed."""
    from rich.console import Console
    from rich.table import Table

    metrics = result.get("metrics") or {}
    reference = metrics.get("reference", {})
    table = Table("", parent, child, title="evaluation (same held-out episodes)")
    for label, key, fmt in SUMMARY_ROWS:
        if isinstance(metrics.get(key), (int, float)) and isinstance(reference.get(key), (int, float)):
            table.add_row(label, fmt.format(reference[key]), fmt.format(metrics[key]))
    if table.row_count:
        Console().print(table)
    if result.get("version"):
        typer.echo(f"registered: version {result['version']}")
    decision = result.get("decision")
    if decision:
        failed = ", ".join(decision.get("failed_checks") or []) or "none"
        typer.echo(f"promotion: {decision['outcome']} (failed checks: {failed}); champion is v{decision['champion_after']}")


def run_compression(flow_name: str, compress, stage: str, *, resolved, model: str, dataset, **kwargs) -> dict:
    """A compression command's run: `compression.stage.compress_and_finish` (compress -> evaluate
    against the parent -> register -> offer to the gates) as the Prefect flow run `flow_name`.
    kwargs: `track`, `offer` and the stage's own arguments (its config section, `out`, ...)."""
    import functools

    from worldforge.compression.stage import compress_and_finish
    from worldforge.data.shards import default_output

    return run_as_flow(
        flow_name,
        functools.partial(compress_and_finish, compress, stage),
        source=model,
        config=resolved,
        dataset_path=dataset or default_output(resolved.data),
        **kwargs,
    )


def default_package(resolved, *parts: str) -> Path:
    """<root>/packages/<family>-<parts...>-<time>: where a command's package goes without --out."""
    from worldforge.core.project import Project

    return Project.current().packages / "-".join([resolved.project.family, *parts, time.strftime("%Y%m%d-%H%M%S")])
