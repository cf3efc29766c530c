"""Config: presets load, dotted overrides apply with YAML typing, bad input names key and file."""

from pathlib import Path

import pytest

from worldforge.config import ConfigError, config_from_dict, load_config, parse_override


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return path


def test_defaults_validate_and_flatten_to_params():
    config = load_config(None)
    flat = config.flat()
    assert flat["project.seed"] == 0
    assert all("." in key for key in flat)


def test_preset_file_then_overrides_win(tmp_path):
    path = write(tmp_path, "project:\n  seed: 3\n  name: demo\n")
    config = load_config(path, ["project.seed=7", "project.family=my-family"])
    assert config.project.seed == 7
    assert config.project.name == "demo"
    assert config.project.family == "my-family"


def test_override_values_are_parsed_as_yaml():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=text") == (["a", "b"], "text")


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "project:\n  seeed: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "project.seeed" in message and "unknown key" in message


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = write(tmp_path, "project:\n  seed: many\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "project.seed" in message and "integer" in message and "'many'" in message


def test_unknown_override_key_is_an_error():
    with pytest.raises(ConfigError, match="projekt"):
        load_config(None, ["projekt.seed=1"])


def test_malformed_override_and_missing_preset():
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config(None, ["project.seed"])
    with pytest.raises(ConfigError, match="unknown preset 'no-such-preset'"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="not found"):
        load_config("missing.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_round_trip_through_dict():
    config = load_config(None, ["project.seed=5"])
    assert config_from_dict(config.model_dump()) == config


def test_preset_extends_a_base_preset(tmp_path):
    (tmp_path / "parent.yaml").write_text("project:\n  seed: 3\n  name: parent\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nproject:\n  name: child\n")
    config = load_config(tmp_path / "child.yaml")
    assert (config.project.name, config.project.seed) == ("child", 3)


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")
