"""`worldforge data`: build, look at and check datasets of episodes (WebDataset shards + manifest)."""

from __future__ import annotations

from pathlib import Path

import typer

from worldforge.cli.common import OVERRIDES, exit_on_error, run_as_flow

app = typer.Typer(
    help="Build datasets of episodes (simulator, Atari, video folders) as WebDataset shards tracked by DVC; "
    "inspect and verify them.",
    no_args_is_help=True,
)


def _summary(folder: Path) -> None:
    """The manifest as two tables: the dataset and its splits."""
    from rich.console import Console
    from rich.table import Table

    from worldforge.data.config import SPLITS
    from worldforge.data.manifest import read_manifest

    manifest = read_manifest(folder)
    console = Console()
    space = manifest.action_space
    actions = f"discrete, n={space.n}" if space.kind == "discrete" else f"continuous, dim={space.dim}"
    if space.names:
        actions += f" ({', '.join(space.names)})"
    facts = Table(title=str(folder), show_header=False)
    for key, value in (
        ("source", manifest.source),
        ("frames", f"{manifest.frame_shape[0]}x{manifest.frame_shape[1]} RGB at {manifest.fps:g} fps"),
        ("sample", f"{manifest.window_frames} frames per stored window"),
        ("actions", actions),
        ("state", ", ".join(manifest.source_info.get("state_fields", [])) or "none"),
        ("shards", f"{len(manifest.shards)}, {sum(s.bytes for s in manifest.shards) / 2**20:.1f} MiB"),
        ("tool", manifest.tool),
    ):
        facts.add_row(key, value)
    console.print(facts)
    splits = Table("split", "episodes", "samples", "frames", "shards")
    for name, split in sorted(manifest.splits.items(), key=lambda item: SPLITS.index(item[0])):
        splits.add_row(name, str(split.episodes), str(split.samples), str(split.frames),
                       str(len(manifest.shards_of(name))))
    console.print(splits)
    if manifest.skipped:
        console.print(f"[yellow]{len(manifest.skipped)} episode(s) or file(s) left out:[/yellow]")
        for problem in manifest.skipped:
            console.print(f"  {problem}")


@app.command("build")
def build(
    config: str = typer.Argument(..., help="Preset name (configs/NAME.yaml) or a YAML path."),
    overrides: list[str] | None = OVERRIDES,
    out: Path | None = typer.Option(None, "--out", help="Dataset folder (default: <root>/datasets/<data.name>)."),
    no_dvc: bool = typer.Option(False, "--no-dvc", help="Do not track the dataset with DVC nor push it."),
) -> None:
    """Record episodes into {split}-NNNNNN.tar shards + manifest.json, then `dvc add` and push."""
    from worldforge.config import load_config
    from worldforge.data.shards import build_dataset, default_output

    with exit_on_error():
        resolved = load_config(config, list(overrides or []))
        folder = out or default_output(resolved.data)
        result = run_as_flow("data-build", build_dataset, config=resolved, out=folder, track=not no_dvc)
        _summary(result.path)
    typer.echo(f"dataset: {result.path}")
    typer.echo(f"dvc md5: {result.dvc_md5 or 'not tracked (--no-dvc)'}")


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="A dataset folder (with manifest.json)."),
    out: Path | None = typer.Option(None, "--out", help="Where the pictures go (default: <root>/reports/data/NAME)."),
    episodes: int = typer.Option(4, "--episodes", min=1, help="Episodes to show."),
) -> None:
    """Print the manifest summary; write a contact sheet (PNG) and a GIF of a few episodes with their actions."""
    from worldforge.core.project import Project
    from worldforge.data.preview import write_previews

    with exit_on_error():
        _summary(path)
        # not inside the dataset folder: that would change its DVC hash
        target = out or Project.current().reports / "data" / path.resolve().name
        sheet, gif = write_previews(path, target, episodes)
    typer.echo(f"contact sheet: {sheet}")
    typer.echo(f"animation: {gif}")


@app.command("verify")
def verify(path: Path = typer.Argument(..., help="A dataset folder (with manifest.json).")) -> None:
    """Check every shard against the manifest (sha256, sample count); exit 1 if any differs."""
    from rich.console import Console
    from rich.table import Table

    from worldforge.data.verify import verify_dataset

    with exit_on_error():
        rows = verify_dataset(path)
    table = Table("shard", "status", title=f"verify {path}")
    for name, status in rows:
        table.add_row(name, "[green]ok[/green]" if status == "ok" else f"[red]{status}[/red]")
    Console().print(table)
    bad = [name for name, status in rows if status != "ok"]
    if bad:
        typer.secho(f"{len(bad)} of {len(rows)} shards do not match the manifest", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(rows)} shards match the manifest")
