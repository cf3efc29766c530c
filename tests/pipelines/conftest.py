"""Helpers shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest


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
