"""Pieces every CLI group shares: the override option and turning errors into clean exits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from worldforge.errors import WorldforgeError

OVERRIDES = typer.Option(
    None, "--override", "-o", help="Dotted override KEY.PATH=VALUE (repeatable), e.g. -o train.lr=3e-4."
)


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
    from worldforge.platform.project import Project
    from worldforge.platform.runtime import configure_deepspeed_env, configure_prefect_env

    root = Project.current().root
    configure_prefect_env(root)
    configure_deepspeed_env()
    return root


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
