"""The `worldforge` command line: one group per area of the platform.

Library functions do the work; the CLI parses arguments, resolves the config and calls them
(through the Prefect flows once those exist). Heavy imports stay inside the commands so that
`worldforge --help` is instant.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from worldforge.cli import compress as compress_cli
from worldforge.cli import config as config_cli
from worldforge.cli import data as data_cli
from worldforge.cli import model as model_cli
from worldforge.cli import pipeline as pipeline_cli
from worldforge.cli import registry as registry_cli
from worldforge.cli import train as train_cli
from worldforge.cli.distill import distill_command
from worldforge.cli.doctor import doctor
from worldforge.cli.evaluate import eval_command
from worldforge.cli.lineage import lineage_command
from worldforge.cli.play import play_command
from worldforge.cli.prune import prune_command

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
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Print the full traceback of bad-input errors too (by default one line; the flow run's log "
        "keeps the traceback).",
    ),
) -> None:
    if root is not None:
        os.environ["WORLDFORGE_ROOT"] = str(root.resolve())
    if verbose:
        os.environ["WORLDFORGE_VERBOSE"] = "1"


app.add_typer(data_cli.app, name="data")
app.add_typer(model_cli.app, name="model")
app.add_typer(train_cli.app, name="train")
compress_cli.app.command("distill")(distill_command)
compress_cli.app.command("prune")(prune_command)
app.add_typer(compress_cli.app, name="compress", help="Compress a model package: distill, prune, quantize.")
app.command("eval")(eval_command)
app.command("lineage")(lineage_command)
app.command("play")(play_command)
app.add_typer(registry_cli.app, name="registry")
app.add_typer(pipeline_cli.app, name="pipeline")
app.add_typer(config_cli.app, name="config")
app.command()(doctor)
