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
