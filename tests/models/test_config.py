"""Model configs, presets and the package config round trip."""

import json

import pytest
import torch

from worldforge.models.config import PRESETS, ModelConfig, ModelConfigError, TokenizerConfig
from worldforge.models.flops import count_parameters
from worldforge.models.world_model import WorldModel, build_world_model, package_config


@pytest.mark.parametrize("kind", ["patch", "vae"])
def test_every_preset_builds_on_meta_and_maps_latents_to_latents(kind):
    sizes = []
    for preset in PRESETS:
        with torch.device("meta"):
            model = WorldModel.from_config(TokenizerConfig(kind=kind), ModelConfig(preset=preset))
            frames = torch.zeros(1, 3, 3, 64, 64)
            latents = model.tokenizer.encode(frames)
            condition = model.action_condition(torch.zeros(1, 3, dtype=torch.long), latents.shape[1])
            out = model.dit(latents, torch.zeros(1, latents.shape[1]), condition)
            decoded = model.tokenizer.decode(out)
        assert out.shape == latents.shape
        assert decoded.shape == frames.shape
        assert all(p.device.type == "meta" for p in model.parameters())
        sizes.append(count_parameters(model.dit))
    assert sizes == sorted(sizes), f"presets should grow: {dict(zip(PRESETS, sizes))}"
    assert 0.5e6 < sizes[0] < 5e6 and sizes[-1] > 300e6


def test_explicit_fields_override_the_preset():
    config = ModelConfig(preset="small", depth=3, heads=4).resolved()
    assert (config.depth, config.width, config.heads, config.head_dim) == (
        3,
        PRESETS["small"]["width"],
        4,
        96,
    )
    assert config.heads_per_block == [4, 4, 4]
    assert config.mlp_hidden_per_block == [int(PRESETS["small"]["width"] * 4.0)] * 3


def test_per_block_heads_and_mlp_widths_describe_a_pruned_network():
    config = ModelConfig(
        preset="tiny", heads_per_block=[4, 2, 3, 1], mlp_hidden_per_block=[512, 100, 64, 512]
    )
    with torch.device("meta"):
        model = WorldModel.from_config(TokenizerConfig(), config)
    head_dim = model.model_cfg.head_dim
    for block, heads, hidden in zip(model.dit.blocks, [4, 2, 3, 1], [512, 100, 64, 512]):
        assert block.attn.qkv.weight.shape == (3 * heads * head_dim, 128)
        assert block.attn.proj.weight.shape == (128, heads * head_dim)
        assert block.mlp.fc1.weight.shape == (hidden, 128)


def test_per_block_list_of_the_wrong_length_is_an_error():
    with pytest.raises(ModelConfigError, match="heads_per_block has 2 entries, model.depth is 4"):
        ModelConfig(preset="tiny", heads_per_block=[4, 4]).resolved()


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="tiny, small, base, large"):
        ModelConfig(preset="huge")


def test_frame_size_must_divide_by_the_tokenizer_compression():
    with pytest.raises(ValueError, match="not divisible"):
        TokenizerConfig(frame_size=(60, 64), patch_size=8)


def test_package_config_round_trip_rebuilds_the_same_network(make_model, random_weights):
    model = random_weights(make_model(heads_per_block=[4, 2, 4, 1]))
    config = json.loads(json.dumps(package_config(model)))  # what config.json holds
    assert config["kind"] == "world_model" and config["model"]["heads_per_block"] == [4, 2, 4, 1]
    rebuilt = build_world_model(config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert package_config(rebuilt) == config


def test_build_world_model_names_the_bad_section_and_key():
    with pytest.raises(ModelConfigError, match="expected 'world_model'"):
        build_world_model({"kind": "classifier"})
    with pytest.raises(ModelConfigError, match=r"'model'.*\n.*depht: unknown key"):
        build_world_model({"kind": "world_model", "model": {"depht": 3}})


def test_a_saved_package_loads_and_predicts_the_same(tmp_path, make_model, random_weights, make_clips):
    from worldforge.packages import load_package, save_package

    model = random_weights(make_model())
    save_package(tmp_path / "pkg", package_config(model), model)
    loaded = load_package(tmp_path / "pkg").build()
    frames, actions = make_clips(1, 3)
    latents = model.tokenizer.encode(frames)
    condition = model.action_condition(actions, 3)
    levels = torch.full((1, 3), 0.5)
    with torch.no_grad():
        assert torch.equal(model.dit(latents, levels, condition), loaded.dit(latents, levels, condition))
