"""`worldforge eval` as a user runs it: a package folder, a dataset, a config file; a reference."""

import typer
import yaml
from typer.testing import CliRunner

from worldforge.cli.evaluate import eval_command

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
        "sharpness (1 = as sharp as truth)",
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
    page = (project.reports / "eval" / "model-vs-other" / "report.html").read_text()  # one page to open
    assert "<h2>Headline</h2>" in page and "copy last frame" in page and "other" in page
    assert "sharpness (1 = as sharp as the truth)" in page
    assert page.count('src="data:image/png;base64,') >= 2  # the PSNR and position-error plots, embedded


def test_eval_of_a_missing_package_is_one_clear_error(project, sim_dataset, small_eval, tmp_path):
    config = write_config(tmp_path / "eval.yaml", small_eval)
    missing = tmp_path / "nothing-here"
    result = runner.invoke(
        eval_app(), [str(missing), "--dataset", str(sim_dataset), "--config", config, "--no-track"]
    )
    assert result.exit_code == 2
    assert "nothing-here" in result.output and "Traceback" not in result.output


def test_a_truncated_package_reads_as_one_line_not_a_traceback(project, tmp_path):
    """Through the evaluate flow (no --dataset), as a user runs the console script: Prefect's
    engine logs the failure, but the console shows the one-line error, not ~100 lines."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from worldforge.models.config import ModelConfig, SamplerConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel, package_config
    from worldforge.packages import save_package

    model = WorldModel.from_config(
        TokenizerConfig(frame_size=(32, 32), patch_size=8),
        ModelConfig(preset="tiny", depth=1, width=32, heads=2),
        sampler_cfg=SamplerConfig(steps=1),
    )
    package = save_package(tmp_path / "broken", package_config(model), model)
    weights = package / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    script = Path(sys.executable).with_name("worldforge")
    env = {**os.environ, "WORLDFORGE_ROOT": str(project.root), "COLUMNS": "200"}
    result = subprocess.run(
        [str(script), "eval", str(package), "--config", "tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "model.safetensors: unreadable safetensors file" in output
    assert "Traceback" not in output and len(output.splitlines()) < 20, output
