"""`worldforge model info`."""

import torch
from typer.testing import CliRunner

from worldforge.cli import app
from worldforge.models.config import ModelConfig, TokenizerConfig
from worldforge.models.flops import count_parameters
from worldforge.models.world_model import WorldModel

runner = CliRunner()


def test_info_prints_the_parameter_counts_of_a_preset():
    result = runner.invoke(
        app, ["model", "info", "small", "-o", "tokenizer.kind=vae"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    with torch.device("meta"):
        model = WorldModel.from_config(TokenizerConfig(kind="vae"), ModelConfig(preset="small"))
    assert f"{count_parameters(model.dit):,}" in result.output
    assert f"{count_parameters(model.tokenizer):,}" in result.output
    assert "GFLOPs/frame: total" in result.output


def test_info_of_an_unknown_preset_exits_2_naming_the_presets():
    result = runner.invoke(app, ["model", "info", "huge"])
    assert result.exit_code == 2
    assert "tiny, small, base, large" in result.output


def test_info_reads_the_model_section_of_a_config_file(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  preset: tiny\n  depth: 2\ntokenizer:\n  patch_size: 4\n")
    result = runner.invoke(app, ["model", "info", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    with torch.device("meta"):
        model = WorldModel.from_config(TokenizerConfig(patch_size=4), ModelConfig(depth=2))
    assert f"{count_parameters(model.dit):,}" in result.output
    assert "256 (DiT patch 1)" in result.output  # (64 / 4)^2 tokens per frame
