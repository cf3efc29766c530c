"""Datasets under DVC: a real DVC repo and local remote in the test's project root."""

from __future__ import annotations

import shutil

from worldforge.core.lineage import DataRepo
from worldforge.data.shards import build_dataset


def test_dvc_hash_is_stable_across_rebuilds_and_pushed(project, tiny_config):
    config = tiny_config()
    folder = project.datasets / "sim"
    first = build_dataset(config, folder, track=True, progress=False)
    assert first.dvc_md5 and first.dvc_md5.endswith(".dir")
    assert any(project.dvc_remote.rglob("*")), "pushed to the local remote"

    shutil.rmtree(folder)  # from nothing again: same config and seed, same bytes, same hash
    again = build_dataset(config, folder, track=True, progress=False)
    assert again.dvc_md5 == first.dvc_md5 == DataRepo(project).md5(folder)

    elsewhere = build_dataset(config, project.datasets / "copy", track=True, progress=False)
    assert elsewhere.dvc_md5 == first.dvc_md5

    other = build_dataset(tiny_config("data.seed=1"), project.datasets / "seed1", track=True, progress=False)
    assert other.dvc_md5 != first.dvc_md5


def test_a_tracked_dataset_comes_back_from_the_remote_by_its_hash(project, tiny_config):
    folder = project.datasets / "sim"
    md5 = build_dataset(tiny_config(), folder, track=True, progress=False).dvc_md5
    manifest = (folder / "manifest.json").read_bytes()
    shutil.rmtree(folder)
    shutil.rmtree(project.root / ".dvc" / "cache")
    DataRepo(project).restore(folder, md5)
    assert (folder / "manifest.json").read_bytes() == manifest
