"""Model packages: bit-exact round trip, and clear refusals of bad packages."""

import json

import pytest
import torch

from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import PackageError, load_package, package_md5, save_package


@pytest.fixture
def package(tmp_path):
    torch.manual_seed(0)
    model = WorldModel.from_config()
    path = save_package(
        tmp_path / "pkg",
        package_config(model),
        model,
        lineage={"stage": "pretrain", "dataset_md5": "abc.dir"},
        metrics={"psnr_mean": 21.5},
    )
    return model, path


def test_round_trip_is_bit_exact(package):
    model, path = package
    loaded = load_package(path)
    assert loaded.lineage.stage == "pretrain" and loaded.lineage.dataset_md5 == "abc.dir"
    assert loaded.metrics == {"psnr_mean": 21.5}
    rebuilt = loaded.build()
    original = model.state_dict()
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert package_config(rebuilt) == {k: v for k, v in loaded.config.items() if k != "extras"}


def test_save_is_atomic_and_replaces_previous(package, tmp_path):
    model, path = package
    before = package_md5(path)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_package(path, package_config(model), model)
    assert package_md5(path) != before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_truncated_weights_are_refused_with_the_file_named(package):
    _, path = package
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(PackageError, match="model.safetensors.*truncated or corrupt"):
        load_package(path)


def test_shape_mismatch_names_tensor_and_shapes(package):
    _, path = package
    config = json.loads((path / "config.json").read_text())
    config["model"]["width"] = config["model"]["width"] * 2
    config["model"]["mlp_hidden_per_block"] = None
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PackageError) as error:
        load_package(path)
    assert "shape" in str(error.value) and "config.json implies" in str(error.value)


def test_pickles_and_bad_configs_are_refused(package, tmp_path):
    _, path = package
    torch.save({"w": torch.zeros(1)}, path / "extra.pt")
    with pytest.raises(PackageError, match="refusing pickled weights"):
        load_package(path)
    (path / "extra.pt").unlink()
    (path / "config.json").write_text('{"kind": "teapot"}')
    with pytest.raises(PackageError, match="'kind' is 'teapot'"):
        load_package(path)
    with pytest.raises(PackageError, match="not a model package"):
        load_package(tmp_path / "nowhere")
