"""`worldforge eval` as a user runs it: a package folder, a dataset, a config file; a reference."""

import typer
import yaml
from typer.testing import CliRunner

from worldforge.platform.cli.evaluate import eval_command

runner = CliRunner()


def eval_app() -> typer.Typer:
    """The command as the lead wires it (`app.command("eval")(eval_command)`), on its own."""
    app = typer.Typer()
    app.command("eval")(eval_command)
    return app


def write_config(path, small_eval) -> str:
    path.write_text(yaml.safe_dump({"eval": small_eval.model_dump(mode="json")}))
    return str(path)


def test_eval_prints_model_vs_reference_table(
    project, sim_dataset, make_package, small_eval, tmp_path, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "200")
    config = write_config(tmp_path / "eval.yaml", small_eval)
    model, reference = make_package("model", seed=0), make_package("other", seed=1)
    result = runner.invoke(
        eval_app(),
        [
            str(model),
            "--reference",
            str(reference),
            "--dataset",
            str(sim_dataset),
            "--config",
            config,
            "--no-track",
            "-o",
            "eval.videos=0",
        ],
    )
    assert result.exit_code == 0, result.output
    for text in (
        "PSNR mean (dB)",
        "copy-last-frame PSNR",
        "frames/s, end to end",
        "reference",
        "delta",
        "ratio",
        "does NOT beat the copy-last-frame baseline",
        "report:",
    ):
        assert text in result.output
    assert (model / "metrics.json").read_text() != "{}"
    assert not list(
        (project.reports / "eval" / "model-vs-other" / "videos").glob("*.gif")
    )  # -o eval.videos=0


def test_eval_of_a_missing_package_is_one_clear_error(project, sim_dataset, small_eval, tmp_path):
    config = write_config(tmp_path / "eval.yaml", small_eval)
    missing = tmp_path / "nothing-here"
    result = runner.invoke(
        eval_app(), [str(missing), "--dataset", str(sim_dataset), "--config", config, "--no-track"]
    )
    assert result.exit_code == 2
    assert "nothing-here" in result.output and "Traceback" not in result.output
