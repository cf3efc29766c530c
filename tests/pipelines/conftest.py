"""Helpers shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness


def files_naming(folder: Path, root: Path) -> list[str]:
    """The files under `folder` (relative names) whose bytes contain `root`'s absolute path, as
    given or resolved: a package that names it cannot be pulled into another project root."""
    needles = {str(root).encode(), str(root.resolve()).encode()}
    return [
        str(path.relative_to(folder))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


@pytest.fixture(name="files_naming")
def files_naming_fixture():
    """`files_naming(folder, root) -> [relative names]`: see `files_naming`."""
    return files_naming


@pytest.fixture(scope="package")
def harness():
    """One ephemeral Prefect API for the pipeline tests (each start costs ~20 s on 2 cores): tests
    that read flow runs back read only those created since they began (`flow_runs(since=...)`)."""
    with prefect_test_harness(server_startup_timeout=180):
        yield
