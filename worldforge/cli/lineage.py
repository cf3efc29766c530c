"""`worldforge lineage`: where a model came from, and getting its exact inputs back."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from worldforge.cli.common import exit_on_error


def _params(params: dict) -> str:
    shown = {k: v for k, v in params.items() if k not in ("checkpoint", "world_size")}
    text = ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in shown.items())
    return text if len(text) <= 48 else text[:45] + "..."


def _errors(metrics: dict) -> str:
    parts = []
    for key in ("agent_position_error", "object_position_error"):
        model, baseline = metrics.get(key), metrics.get(f"baseline_{key}")
        parts.append(f"{model / baseline:.2f}" if model is not None and baseline else "-")
    return " / ".join(parts)


def lineage_command(
    source: str = typer.Argument(..., help="A model package folder or models:/name@alias (or models:/name/N)."),
    as_json: bool = typer.Option(False, "--json", help="The chain as JSON instead of a table."),
    pull: Path | None = typer.Option(
        None,
        "--pull",
        help="Restore into this empty project root, from the DVC remote alone, the exact dataset and every "
        "ancestor package, each checked against its md5. Fails, leaving DEST empty, if anything is missing.",
    ),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Rebuild the dataset from the config its manifest records (in a scratch folder) and confirm it "
        "gets the recorded DVC md5; exit 1 if not.",
    ),
    family: str | None = typer.Option(
        None, "--family", help="Registry family to find versions of ancestors named by path (default: the URI's)."
    ),
) -> None:
    """The chain from a model back to its dataset: one row per ancestor with its stage, registry
    version, package md5, git sha, the stage's own parameters, headline metrics and MLflow run."""
    from rich.console import Console
    from rich.table import Table

    from worldforge.registry.trace import pull as pull_chain
    from worldforge.registry.trace import rebuild as rebuild_dataset
    from worldforge.registry.trace import restore_path, trace

    with exit_on_error():
        chain = trace(source, family=family)
        restored = pull_chain(chain, pull) if pull is not None else None
        rebuilt = None
        if rebuild:
            where = Path(pull) / restore_path(chain.dataset[0] or "") if pull is not None else None
            rebuilt = rebuild_dataset(chain, where)
    if as_json:
        payload = chain.as_dict()
        if restored is not None:
            payload["pulled"] = {"dest": str(pull), "restored": restored}
        if rebuilt is not None:
            payload["rebuilt"] = {"recorded_md5": rebuilt[0], "rebuilt_md5": rebuilt[1], "same": rebuilt[0] == rebuilt[1]}
        typer.echo(json.dumps(payload, indent=2, default=str))
        if rebuilt is not None and rebuilt[0] != rebuilt[1]:
            raise typer.Exit(1)
        return
    families = {a.version.removeprefix("models:/").split("/")[0] for a in chain.ancestors if a.version}
    title = f"lineage of {source}" + (f" (versions of {', '.join(sorted(families))})" if families else "")
    table = Table(title=title, caption="newest first; agent / balls: position error as a multiple of copy-last-frame's")
    for column in ("stage", "v", "package md5", "git", "params", "PSNR", "agent / balls", "run"):
        table.add_column(column, overflow="fold", no_wrap=column != "params")
    for a in chain.ancestors:
        psnr = a.metrics.get("psnr_mean")
        table.add_row(
            a.stage,
            (a.version or "-").rsplit("/", 1)[-1],
            a.package_md5[:10],
            (a.git_sha or "-")[:8],
            _params(a.params),
            f"{psnr:.2f}" if psnr is not None else "-",
            _errors(a.metrics),
            (a.mlflow_run_id or "-")[:8],
        )
    Console().print(table)
    dataset, md5 = chain.dataset
    typer.echo(f"dataset: {dataset or '-'} (DVC md5 {md5 or 'untracked'})")
    if restored is not None:
        typer.echo(f"pulled into {pull}: " + ", ".join(f"{path} ({md5})" for path, md5 in restored.items()))
    if rebuilt is not None:
        recorded, again = rebuilt
        if recorded != again:
            typer.secho(f"rebuilt dataset: DVC md5 {again}, recorded {recorded}: NOT reproduced", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo(f"rebuilt dataset from its recorded config: DVC md5 {again} (as recorded)")

