"""Runtime: environment set-up for Prefect and DeepSpeed, device and distributed defaults."""

from worldforge.core.runtime import configure_prefect_env, init_distributed, select_device


def test_prefect_home_is_created_under_a_project_root_that_does_not_exist_yet(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    root = tmp_path / "new" / "project"
    configure_prefect_env(root)
    import os

    assert os.environ["PREFECT_HOME"] == str(root / ".prefect")
    assert (root / ".prefect").is_dir()  # Prefect itself only creates the last level
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_one_process_needs_no_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed(select_device("cpu"))
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
