"""The `worldforge` command line: one group per area of the platform.

Library functions do the work; the CLI parses arguments, resolves the config and calls them
(through the Prefect flows once those exist). Heavy imports stay inside the commands so that
`worldforge --help` is instant.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from worldforge.platform.cli import compress as compress_cli
from worldforge.platform.cli import config as config_cli
from worldforge.platform.cli import data as data_cli
from worldforge.platform.cli import model as model_cli
from worldforge.platform.cli import pipeline as pipeline_cli
from worldforge.platform.cli import registry as registry_cli
from worldforge.platform.cli import train as train_cli
from worldforge.platform.cli.distill import distill_command
from worldforge.platform.cli.doctor import doctor
from worldforge.platform.cli.evaluate import eval_command
from worldforge.platform.cli.prune import prune_command

app = typer.Typer(
    name="worldforge",
    help=(
        "Train and compress action-conditioned video world models.\n\n"
        "Everything is written under the project root (--root, $WORLDFORGE_ROOT, or the current "
        "directory): datasets, model packages, the MLflow store, the DVC repo and remote, reports."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    root: Path | None = typer.Option(
        None, "--root", help="Project root (default: $WORLDFORGE_ROOT or the current directory)."
    ),
) -> None:
    if root is not None:
        os.environ["WORLDFORGE_ROOT"] = str(root.resolve())


app.add_typer(data_cli.app, name="data")
app.add_typer(model_cli.app, name="model")
app.add_typer(train_cli.app, name="train")
compress_cli.app.command("distill")(distill_command)
compress_cli.app.command("prune")(prune_command)
app.add_typer(compress_cli.app, name="compress", help="Compress a model package: distill, prune, quantize.")
app.command("eval")(eval_command)
app.add_typer(registry_cli.app, name="registry")
app.add_typer(pipeline_cli.app, name="pipeline")
app.add_typer(config_cli.app, name="config")
app.command()(doctor)
