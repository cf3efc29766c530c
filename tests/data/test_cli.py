"""`worldforge data build | inspect | verify`, run through the real CLI."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from worldforge.cli import app

SMALL = [
    "-o",
    "data.resolution=32",
    "-o",
    "data.episodes=6",
    "-o",
    "data.episode_frames=8",
    "-o",
    "data.window_frames=8",
    "-o",
    "data.clip_frames=4",
]


def test_build_inspect_verify(project, tmp_path):
    runner = CliRunner()
    config = tmp_path / "small.yaml"
    config.write_text("data:\n  name: small\n  shards:\n    maxcount: 2\n")

    built = runner.invoke(app, ["data", "build", str(config), *SMALL])
    assert built.exit_code == 0, built.output
    folder = project.datasets / "small"
    assert (folder / "manifest.json").is_file()
    assert "dvc md5: " in built.output and ".dir" in built.output  # tracked and pushed by default

    shown = runner.invoke(app, ["data", "inspect", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert "simulator" in shown.output and "train" in shown.output
    sheet = project.reports / "data" / "small" / "contact_sheet.png"
    gif = Image.open(project.reports / "data" / "small" / "episodes.gif")
    assert Image.open(sheet).size[0] == 8 * 128 and gif.n_frames == 8

    checked = runner.invoke(app, ["data", "verify", str(folder)])
    assert checked.exit_code == 0 and "all 4 shards match" in checked.output

    (folder / "train-000000.tar").write_bytes(b"damaged")
    checked = runner.invoke(app, ["data", "verify", str(folder)])
    assert checked.exit_code == 1 and "1 of 4 shards do not match" in checked.output


def test_build_without_dvc_and_bad_input_errors(project, tmp_path):
    runner = CliRunner()
    out = tmp_path / "outside-the-root"
    built = runner.invoke(app, ["data", "build", "none.yaml", *SMALL])
    assert built.exit_code == 2 and "config file not found" in built.output

    built = runner.invoke(
        app, ["data", "build", str(_defaults(tmp_path)), *SMALL, "--out", str(out), "--no-dvc"]
    )
    assert built.exit_code == 0, built.output
    assert "not tracked (--no-dvc)" in built.output and not (project.root / ".dvc").exists()

    tracked = runner.invoke(app, ["data", "build", str(_defaults(tmp_path)), *SMALL, "--out", str(out)])
    assert tracked.exit_code == 2 and "outside the project root" in tracked.output

    missing = runner.invoke(app, ["data", "inspect", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no manifest" in missing.output


def _defaults(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n")
    return path
