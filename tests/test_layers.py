"""The one-way layers of docs/design.md, checked by import-linter's contracts in pyproject.toml:
they hold for the package as it is, and an upward import breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` run in `root` (which holds pyproject.toml and the worldforge package)."""
    command = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(command), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PYTHONPATH": str(root), "PATH": str(command.parent)},
    )


def test_the_package_keeps_its_layers():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "worldforge", copy / "worldforge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy)
    models = copy / "worldforge" / "models" / "sampler.py"
    models.write_text(models.read_text() + "\nfrom worldforge.training.trainer import Trainer  # upward\n")

    result = lint_imports(copy)

    assert result.returncode != 0
    assert "worldforge.models is not allowed to import worldforge.training" in result.stdout
    assert "worldforge.models.sampler -> worldforge.training.trainer" in result.stdout
