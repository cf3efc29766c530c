"""Lineage: a real DVC repo and a real local remote in temp dirs."""

import shutil

import pytest

from worldforge.core.lineage import DataRepo, LineageError


def make_folder(project, name="dataset", files=None):
    folder = project.root / "datasets" / name
    folder.mkdir(parents=True)
    for file_name, text in (files or {"a.txt": "alpha\n", "sub/b.txt": "beta\n"}).items():
        (folder / file_name).parent.mkdir(parents=True, exist_ok=True)
        (folder / file_name).write_text(text)
    return folder


def test_track_push_delete_and_restore_by_md5(project):
    repo = DataRepo(project)
    folder = make_folder(project)
    md5 = repo.track(folder)
    assert md5.endswith(".dir")
    repo.push(folder)

    shutil.rmtree(folder)
    shutil.rmtree(project.root / ".dvc" / "cache")
    repo.dvc_file(folder).unlink()  # only the hash survives, e.g. in an MLflow tag

    repo.restore(folder, md5)
    assert (folder / "a.txt").read_text() == "alpha\n"
    assert (folder / "sub" / "b.txt").read_text() == "beta\n"
    assert repo.md5(folder) == md5


def test_restore_an_older_version_after_the_folder_changed(project):
    repo = DataRepo(project)
    folder = make_folder(project, files={"a.txt": "v1\n"})
    first = repo.track_and_push(folder)
    (folder / "a.txt").write_text("v2\n")
    second = repo.track_and_push(folder)
    assert first != second
    repo.restore(folder, first)
    assert (folder / "a.txt").read_text() == "v1\n"


def test_same_content_gives_same_md5(project):
    repo = DataRepo(project)
    one = repo.track(make_folder(project, "one", {"x.txt": "same\n"}))
    two = repo.track(make_folder(project, "two", {"x.txt": "same\n"}))
    assert one == two


def test_errors_name_the_path(project, tmp_path):
    repo = DataRepo(project)
    with pytest.raises(LineageError, match="does not exist"):
        repo.track(project.root / "datasets" / "missing")
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(LineageError, match="outside the project root"):
        repo.track(outside)
    with pytest.raises(LineageError, match="not tracked"):
        repo.md5(make_folder(project, "untracked"))


def test_unwritable_remote_fails_with_advice(project, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the remote folder should be")
    repo = DataRepo(project, remote_url=str(blocker / "remote"))
    folder = make_folder(project)
    with pytest.raises(LineageError, match="writable"):
        repo.track_and_push(folder)
    assert (folder / "a.txt").read_text() == "alpha\n"  # nothing already written is lost


def test_version_package_tracks_and_pushes_under_the_root_and_skips_outside(project, tmp_path, caplog):
    from worldforge.core.lineage import version_package

    folder = make_folder(project, "package")
    md5 = version_package(folder, project)
    assert md5 == DataRepo(project).md5(folder)
    shutil.rmtree(folder)
    shutil.rmtree(project.root / ".dvc" / "cache")
    DataRepo(project).restore(folder, md5)  # it was pushed: the remote alone brings it back
    assert (folder / "a.txt").read_text() == "alpha\n"

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert version_package(outside, project) is None
    assert "outside the project root" in caplog.text
