"""`worldforge train`: pretrain the tokenizer and the world model with DeepSpeed.

One process:          worldforge train world quickstart
Several (one node):   torchrun --standalone --nproc_per_node 8 --no-python worldforge train world h100-base
Several nodes:        see infra/README.md (deepspeed launcher + hostfile, or infra/k8s)
A checkpoint -> package: worldforge train export <root>/checkpoints/RUN/stepNNNNNNNN --out PACKAGE
"""

from __future__ import annotations

from pathlib import Path

import typer

from worldforge.cli.common import CONFIG, OVERRIDES, exit_on_error, run_as_flow

app = typer.Typer(
    help="Pretrain the tokenizer and the world model on a dataset's shards with DeepSpeed ZeRO "
    "(one process, or several under torchrun / the deepspeed launcher).",
    no_args_is_help=True,
)

DATASET = typer.Option(
    None, "--dataset", help="Dataset folder (default: <root>/datasets/<data.name>, built first if missing)."
)
OUT = typer.Option(None, "--out", help="Model package folder (default: <root>/packages/<family>-<stage>).")
RESUME = typer.Option(False, "--resume", help="Continue from the newest checkpoint of this package's run.")
DEEPSPEED = typer.Option(
    None,
    "--deepspeed-config",
    help="DeepSpeed config: a name in infra/deepspeed (zero0..zero3, zero2-offload, zero3-offload) or a JSON "
    "path; the same as -o train.deepspeed=...",
)
TOKENIZER = typer.Option(
    None, "--tokenizer", help="Package of the pretrained tokenizer (required for tokenizer.kind=vae)."
)
CHECKPOINT = typer.Argument(..., help="A checkpoint folder: <root>/checkpoints/<run>/stepNNNNNNNN.")
EXPORT_OUT = typer.Option(..., "--out", help="Model package folder to write.")
RAW = typer.Option(False, "--raw", help="The trained weights rather than their EMA.")
# Exit statuses of a run stopped by a signal, as a shell reports them (128 + signal number).
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def _config(config: str, overrides: list[str] | None, deepspeed: str | None):
    from worldforge.config import load_config

    extra = [f"train.deepspeed={deepspeed}"] if deepspeed else []
    return load_config(config, [*(overrides or []), *extra])


def _dataset(resolved, dataset: Path | None) -> Path:
    """The given dataset, or the config's default one, built (and tracked) by rank 0 if missing."""
    from worldforge.data.shards import build_dataset, default_output
    from worldforge.training.launch import barrier, setup_distributed

    folder = Path(dataset or default_output(resolved.data))
    if (folder / "manifest.json").is_file():
        return folder
    if dataset is not None:
        raise typer.BadParameter(f"{folder}: not a dataset (no manifest.json)", param_hint="--dataset")
    info, _ = setup_distributed(resolved.train.device)
    if info.is_main:
        typer.echo(f"building the dataset {folder} first (worldforge data build)")
        build_dataset(resolved, folder, track=True)
    barrier()
    return folder


def _run(name: str, stage, **kwargs) -> Path | None:
    """Run a pretraining stage; in the main process (rank 0, or the only one) as a Prefect flow run
    `name`, the other ranks of a launcher join it as plain processes (one flow run per job)."""
    import os

    from worldforge.core.runtime import setup_logging
    from worldforge.training.trainer import TrainingInterrupted

    setup_logging("INFO")
    try:
        if int(os.environ.get("RANK", "0")) == 0:
            return run_as_flow(name, stage, **kwargs, progress=True)
        return stage(**kwargs, progress=True)
    except TrainingInterrupted as stopped:
        typer.secho(str(stopped), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(SIGNAL_EXIT.get(stopped.signal, 1)) from None


@app.command("tokenizer")
def tokenizer(
    config: str = CONFIG,
    overrides: list[str] | None = OVERRIDES,
    dataset: Path | None = DATASET,
    out: Path | None = OUT,
    resume: bool = RESUME,
    deepspeed: str | None = DEEPSPEED,
) -> None:
    """Pretrain the VAE tokenizer (train.tokenizer_steps); nothing to do for the patch tokenizer."""
    from worldforge.training.pretrain import pretrain_tokenizer

    with exit_on_error():
        resolved = _config(config, overrides, deepspeed)
        if resolved.tokenizer.kind == "patch":
            typer.echo("tokenizer.kind=patch has no weights: nothing to pretrain")
            return
        path = _run(
            "train-tokenizer",
            pretrain_tokenizer,
            config=resolved,
            dataset_path=_dataset(resolved, dataset),
            out_package=out,
            resume=resume,
        )
    typer.echo(f"package: {path}")


@app.command("world")
def world(
    config: str = CONFIG,
    overrides: list[str] | None = OVERRIDES,
    dataset: Path | None = DATASET,
    tokenizer_package: Path | None = TOKENIZER,
    out: Path | None = OUT,
    resume: bool = RESUME,
    deepspeed: str | None = DEEPSPEED,
) -> None:
    """Pretrain the world model (train.steps) on the frozen tokenizer."""
    from worldforge.training.pretrain import pretrain_world

    with exit_on_error():
        resolved = _config(config, overrides, deepspeed)
        path = _run(
            "train-world",
            pretrain_world,
            config=resolved,
            dataset_path=_dataset(resolved, dataset),
            tokenizer_package=tokenizer_package,
            out_package=out,
            resume=resume,
        )
    typer.echo(f"package: {path}")


@app.command("export")
def export(checkpoint: Path = CHECKPOINT, out: Path = EXPORT_OUT, raw: bool = RAW) -> None:
    """Consolidate a (ZeRO) checkpoint into a model package, on demand, in one CPU process."""
    from worldforge.training.export import export_checkpoint

    with exit_on_error():
        path = export_checkpoint(checkpoint, out, weights="raw" if raw else "ema")
    typer.echo(f"package: {path}")
