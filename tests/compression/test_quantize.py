"""FP8 quantization: where quantizers go, how far outputs move, packages that reload as they were
saved, calibration on the configured clips, and what a machine without FP8 matmuls runs.

The machine here has no GPU: modelopt runs as fake quantization (E4M3 rounding, matmuls in
float32) and torchao's dynamic recipe falls back to FP8 weight-only; those fallbacks are tested
as such. The tiny DiT has noise weights (a fresh one has zero AdaLN gates and output)."""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from worldforge.compression.quantize.calibration import calibration_batches
from worldforge.compression.quantize.config import DEFAULT_EXCLUDE, QuantizeConfig, QuantizeError
from worldforge.compression.quantize.stage import excluded, quantize_model, quantize_package
from worldforge.models.quantized import QuantizationFallbackWarning
from worldforge.models.quantized.modelopt_fp8 import (
    TENSORS_FILE,
    ModeloptStateError,
    enabled_quantizers,
    encode_state,
)
from worldforge.models.quantized.torchao_fp8 import is_quantized
from worldforge.models.streaming import rollout
from worldforge.models.tokenizer_objective import psnr
from worldforge.packages import PackageError, load_package

BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
QUANTIZED = [f"dit.blocks.{i}.{name}" for i in range(4) for name in BLOCK_LINEARS]


def fast(backend: str = "modelopt", **fields) -> QuantizeConfig:
    return QuantizeConfig(**{"backend": backend, "calibration_clips": 4, "device": "cpu", **fields})


def quantize(source, config, qcfg: QuantizeConfig, dataset, name: str = "fp8"):
    """The package `source` quantized into a sibling folder `name`, untracked."""
    return quantize_package(source, config, qcfg, dataset, source.parent / name, track=False)


@contextlib.contextmanager
def fallback_warned(expected: bool):
    """Assert that a QuantizationFallbackWarning is issued inside, or that none is."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    warned = any(issubclass(w.category, QuantizationFallbackWarning) for w in caught)
    assert warned == expected, [str(w.message) for w in caught]


def test_exclusion_patterns_match_a_layer_or_any_module_containing_it():
    assert excluded("dit.blocks.11.adaln", list(DEFAULT_EXCLUDE))
    assert excluded("dit.t_embed.fc2", list(DEFAULT_EXCLUDE))
    assert excluded("dit.final.linear", list(DEFAULT_EXCLUDE))
    assert not excluded("dit.blocks.0.attn.qkv", list(DEFAULT_EXCLUDE))
    assert not excluded("dit.finale", ["dit.final"])


def test_modelopt_quantizers_sit_in_the_configured_layers_only(quant_dataset, quant_config, make_world_model):
    config = quant_config()
    qcfg = fast(exclude=[*DEFAULT_EXCLUDE, "dit.blocks.3.mlp"])
    model, record = quantize_model(make_world_model(), qcfg, calibration_batches(quant_dataset, config, qcfg))

    expected = [name for name in QUANTIZED if not name.startswith("dit.blocks.3.mlp")]
    assert record.layers == expected
    quantizers = {f"{name}.{q}" for name in expected for q in ("weight_quantizer", "input_quantizer")}
    assert set(enabled_quantizers(model)) == quantizers
    assert set(record.excluded_layers) == {
        "dit.patch_embed",
        "dit.t_embed.fc1",
        "dit.t_embed.fc2",
        "dit.final.adaln",
        "dit.final.linear",
        "dit.blocks.3.mlp.fc1",
        "dit.blocks.3.mlp.fc2",
        *(f"dit.blocks.{i}.adaln" for i in range(4)),
    }
    amax = model.dit.blocks[0].mlp.fc1.input_quantizer.amax
    assert amax is not None and float(amax) > 0  # calibrated


def test_modelopt_quantizes_a_vae_tokenizer_but_its_first_and_last_convolution(quant_dataset, quant_config):
    from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel

    vae = TokenizerConfig(
        kind="vae", frame_size=(32, 32), base_channels=8, spatial_compression=4, temporal_compression=2
    )
    dit = ModelConfig(preset="tiny", num_actions=6)
    model = WorldModel.from_config(vae, dit, ObjectiveConfig(), SamplerConfig(steps=1))
    config = quant_config("data.clip_frames=5")  # 1 + 2 k frames for a 2x temporal compression
    convs = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv3d)}
    model, record = quantize_model(model.eval(), fast(), calibration_batches(quant_dataset, config, fast()))

    first_and_last = {"tokenizer.encoder.conv_in.conv", "tokenizer.decoder.conv_out.conv"}
    assert {name for name in record.layers if name.startswith("tokenizer.")} == convs - first_and_last
    assert first_and_last <= set(record.excluded_layers)
    assert "tokenizer.decoder.conv_in.conv.input_quantizer" in enabled_quantizers(model)
    assert "tokenizer.encoder.conv_in.conv.input_quantizer" not in enabled_quantizers(model)


def test_torchao_quantizes_the_configured_linears_only(make_world_model):
    qcfg = fast("torchao", exclude=[*DEFAULT_EXCLUDE, "dit.blocks.0"])
    model, record = quantize_model(make_world_model(), qcfg)

    assert record.recipe == "fp8_weight_only"  # auto, on a CPU
    quantized = {name for name, module in model.named_modules() if is_quantized(module)}
    expected = {name for name in QUANTIZED if not name.startswith("dit.blocks.0.")}
    assert quantized == expected == set(record.layers)


def test_linears_whose_widths_fp8_matmuls_cannot_take_stay_in_high_precision(make_world_model):
    model = make_world_model(mlp_hidden_per_block=[512, 504, 512, 512])  # a pruned block: 504 = 16 * 31.5
    _, record = quantize_model(model, fast("torchao"))

    assert {"dit.blocks.1.mlp.fc1", "dit.blocks.1.mlp.fc2"} <= set(record.excluded_layers)
    assert "dit.blocks.1.attn.qkv" in record.layers and not is_quantized(model.dit.blocks[1].mlp.fc1)


@pytest.mark.parametrize("backend", ["modelopt", "torchao"])
def test_quantized_rollout_stays_close_to_the_original(backend, quant_dataset, quant_config, source_package):
    config = quant_config()
    path = quantize(source_package, config, fast(backend), quant_dataset)
    original = load_package(source_package).build()
    with fallback_warned(backend == "modelopt"):  # modelopt FP8 is simulated on a CPU
        quantized = load_package(path).build()
    clip = next(iter(calibration_batches(quant_dataset, config, fast(calibration_split="test"))))
    frames, actions = clip["frames"], clip["actions"]  # (4, 4, 3, 32, 32), (4, 4)

    def generate(model):
        return rollout(model, frames[:, :1], actions, 3, generator=torch.Generator().manual_seed(0)).frames

    expected, got = generate(original), generate(quantized)
    assert 0 < (got - expected).abs().max() < 0.05
    assert float(psnr(got, expected)) > 50.0
    # One DiT call at a middle noise level: FP8's 3 mantissa bits move the velocity by a few percent.
    latents = original.tokenizer.encode(frames)
    levels = torch.full(latents.shape[:2], 0.5)
    condition = original.action_condition(actions, latents.shape[1])
    with torch.no_grad():
        reference = original.velocity(latents, levels, condition)
        error = (quantized.velocity(latents, levels, condition) - reference).norm() / reference.norm()
    assert 1e-3 < float(error) < 0.03


@pytest.mark.parametrize("backend", ["modelopt", "torchao"])
def test_save_then_load_gives_identical_outputs(
    backend, quant_dataset, quant_config, source_package, make_world_model
):
    config = quant_config()
    qcfg = fast(backend)
    in_memory, _ = quantize_model(make_world_model(), qcfg, calibration_batches(quant_dataset, config, qcfg))
    path = quantize(source_package, config, qcfg, quant_dataset)
    with fallback_warned(backend == "modelopt"):
        loaded = load_package(path).build()
    frames = torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    actions = torch.randint(0, 6, (2, 6), generator=torch.Generator().manual_seed(2))

    def generate(model):
        return rollout(model, frames, actions, 4, generator=torch.Generator().manual_seed(0)).frames

    assert torch.equal(generate(in_memory), generate(loaded))


def test_calibration_uses_the_configured_number_of_clips(quant_dataset, quant_config, source_package):
    config = quant_config()  # loader batches of 4 clips
    qcfg = fast(calibration_clips=6)
    assert [len(batch["frames"]) for batch in calibration_batches(quant_dataset, config, qcfg)] == [4, 2]

    path = quantize(source_package, config, qcfg, quant_dataset)
    record = load_package(path).config["quantization"]
    assert record["calibration"] == {"clips": 6, "rollouts": 2, "split": "train", "steps": 2}
    assert json.loads((path / "metrics.json").read_text())["quantize.calibration_clips"] == 6

    with pytest.raises(QuantizeError, match=r"quantize.calibration_clips=500.*only 36 clips"):
        calibration_batches(quant_dataset, config, fast(calibration_clips=500))


def test_loading_without_fp8_hardware_explains_what_runs_instead(quant_dataset, quant_config, source_package):
    config = quant_config()
    # A package made for an H100: torchao with dynamic activation scaling.
    dynamic = fast("torchao", recipe="fp8_dynamic")
    with pytest.warns(QuantizationFallbackWarning, match="the package records fp8_dynamic"):
        path = quantize(source_package, config, dynamic, quant_dataset, "h100")
    assert load_package(path).config["quantization"]["recipe"] == "fp8_dynamic"
    expected = r"fp8_dynamic needs FP8 matmuls \(CUDA compute capability >= 8.9\); this is cpu.*weight_only"
    with pytest.warns(QuantizationFallbackWarning, match=expected):
        model = load_package(path).build("cpu")
    fc1 = model.dit.blocks[0].mlp.fc1
    assert is_quantized(fc1) and fc1.weight.act_quant_kwargs is None  # FP8 weights, activations as they are
    frames = rollout(model, torch.zeros(1, 1, 3, 32, 32), torch.zeros(1, 2, dtype=torch.long), 2).frames
    assert frames.isfinite().all()

    path = quantize(source_package, config, fast(), quant_dataset, "static")
    simulated = r"FP8 is simulated on cpu.*compute capability >= 8.9"
    with pytest.warns(QuantizationFallbackWarning, match=simulated):
        load_package(path).build("cpu")


def test_a_quantized_package_missing_its_scales_names_the_file(quant_dataset, quant_config, source_package):
    path = quantize(source_package, quant_config(), fast(), quant_dataset)
    broken = shutil.copytree(path, path.parent / "broken")
    (broken / TENSORS_FILE).unlink()
    with pytest.raises(PackageError, match=TENSORS_FILE), pytest.warns(QuantizationFallbackWarning):
        load_package(broken).build()

    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_package(path, quant_config(), fast(), quant_dataset, path.parent / "twice", track=False)


def test_modelopt_state_that_json_cannot_hold_is_refused_by_name():
    with pytest.raises(ModeloptStateError, match=r"modelopt_state.layer._calibrator"):
        encode_state({"layer": {"_calibrator": object(), "_num_bits": (4, 3)}})
    encoded = encode_state({"b": (4, 3), "t": torch.float32})
    assert encoded == {"b": {"__tuple__": [4, 3]}, "t": {"__dtype__": "float32"}}


def test_a_recipe_of_the_other_backend_is_a_config_error():
    with pytest.raises(ValueError, match=r"recipe 'fp8_dynamic' is not a modelopt recipe"):
        QuantizeConfig(backend="modelopt", recipe="fp8_dynamic")


def test_cli_quantizes_tracks_the_run_and_records_lineage(
    tracked_project, quant_dataset, source_package, tmp_path, assert_registered_with_decision
):
    import mlflow
    from typer.testing import CliRunner

    from worldforge.cli.compress import app
    from worldforge.packages import package_md5

    preset = tmp_path / "quant.yaml"
    preset.write_text("project: {experiment: quant-test}\ndata: {resolution: 32, clip_frames: 4}\n")
    out = tmp_path / "fp8"
    model = ["--model", str(source_package), "--dataset", str(quant_dataset)]
    args = ["quantize", str(preset), *model, "--backend", "torchao", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"quantized package: {out}" in result.output

    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["stage"] == "quantize"
    parent = str(Path(source_package).resolve())  # outside the project root: absolute
    assert lineage["parent"] == parent and lineage["parent_md5"] == package_md5(source_package)
    assert lineage["params"]["backend"] == "torchao" and lineage["params"]["recipe"] == "fp8_weight_only"
    run = mlflow.get_run(lineage["mlflow_run_id"])
    assert run.data.tags["stage"] == "quantize" and run.data.tags["parent.model"] == parent
    assert run.data.params["quantize.backend"] == "torchao"
    assert run.data.metrics["quantize.layers"] == len(QUANTIZED)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "package")}
    assert "package/config.json" in artifacts
    # like distill and prune, the command ends with an evaluated, registered version and its gate decision
    assert_registered_with_decision(result.output, preset, "quantize", package_md5(out))

    bad_args = ["quantize", str(preset), *model, "--backend", "tensorrt", "--out", str(tmp_path / "x")]
    bad = CliRunner().invoke(app, bad_args)
    assert bad.exit_code == 2 and "--backend" in bad.output and "'modelopt' or 'torchao'" in bad.output
    assert not (tmp_path / "x").exists()
