"""`worldforge play SOURCE`: steer a model with the keyboard in a local web page."""

from __future__ import annotations

from pathlib import Path

import typer

from worldforge.cli.common import exit_on_error


def model_name(source: str, package: Path, family: str) -> str:
    """What the page calls the model: its registry version where one is known, else its folder."""
    from worldforge.packages import package_md5
    from worldforge.registry.query import version_of

    version = version_of(source, package_md5(package), family)
    if version is None:
        return str(source)
    return version if version == source else f"{source} ({version})"


def trained_on(package: Path) -> Path | None:
    """The dataset the package's lineage names, where it exists in this project root."""
    from worldforge.packages import read_lineage
    from worldforge.packages.lineage import project_folder

    lineage = read_lineage(package)
    if lineage is None or not lineage.dataset:
        return None
    folder = project_folder(lineage.dataset)
    return folder if (folder / "manifest.json").is_file() else None


def play_command(
    source: str = typer.Argument(
        ..., help="A model package folder, or models:/NAME@ALIAS, or models:/NAME/VERSION."
    ),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Dataset whose held-out episodes give the context frames "
        "(default: <root>/datasets/<data.name> of --config).",
    ),
    config: str = typer.Option(
        "quickstart", "--config", "-c", help="Preset name or YAML path (for the defaults)."
    ),
    split: str = typer.Option("test", "--split", help="Split the starting episodes come from."),
    episodes: int = typer.Option(8, "--episodes", min=1, help="How many episodes the page offers."),
    context_frames: int | None = typer.Option(
        None,
        "--context",
        min=1,
        help="Recorded frames before the model takes over (default: eval.context_frames).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the page to the network."
    ),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    browser: bool = typer.Option(
        True, "--browser/--no-browser", help="Open the page in the default browser."
    ),
) -> None:
    """Serve a page where you steer SOURCE with the keyboard, starting from a held-out episode's
    context frames; frames stream as the KV-cached rollout makes them, with the live frames/s.
    "replay" mode drives the model with the episode's recorded actions, the recording beside it.
    Runs until Ctrl-C (a long-running command)."""
    with exit_on_error():
        from worldforge.config import load_config
        from worldforge.data.shards import default_output
        from worldforge.play.server import serve
        from worldforge.play.session import Player, PlayError
        from worldforge.registry.query import resolve

        resolved = load_config(config)
        package = resolve(source)
        dataset = dataset or trained_on(package) or default_output(resolved.data)
        if not (dataset / "manifest.json").is_file():
            raise PlayError(
                f"{dataset}/manifest.json: no dataset there; build it (worldforge data build {config}) or pass --dataset"
            )
        player = Player.open(
            package,
            dataset,
            split=split,
            episodes=episodes,
            context_frames=context_frames or resolved.eval.context_frames,
        )
        player.name = model_name(source, package, resolved.project.family)  # a registry lookup: once loaded
        url = f"http://{host}:{port}/"
        typer.echo(f"playing {player.name} on {url} (Ctrl-C stops)")
        if browser:  # once the server is listening
            import threading
            import webbrowser

            threading.Timer(1.0, webbrowser.open, [url]).start()
        serve(player, host, port)
