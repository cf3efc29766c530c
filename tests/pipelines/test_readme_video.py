"""The README's video example, run as written: its config file and its commands, taken verbatim
from between the `<!-- readme-example: video -->` markers, on a folder of small videos with `.npy`
and `.jsonl` actions. The test adds only `TEST_SCALE` to the commands that take the config."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from worldforge.cli import app

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- readme-example: video -->\n(.*?)<!-- /readme-example -->", re.DOTALL)

# The tiny preset's scale (configs/tiny.yaml) for the README's quickstart-based config: 32x32 frames,
# short windows, a 2-block DiT trained 4 steps, 2 evaluation episodes, no compression stages.
TEST_SCALE = [
    "data.resolution=32",
    "tokenizer.frame_size=[32,32]",
    "data.window_frames=8",
    "data.clip_frames=4",
    "data.clip_stride=2",
    "model.stem_channels=8",
    "model.depth=2",
    "model.width=32",
    "model.heads=2",
    "model.context_window=4",
    "sampler.steps=2",
    "train.steps=4",
    "train.batch_size=2",
    "train.warmup_steps=2",
    "train.checkpoint_every=0",
    "train.validation.every=0",
    "train.system_metrics=false",
    "eval.long_horizon=null",
    "eval.episodes=2",
    "eval.batch_size=2",
    "eval.horizon=4",
    "eval.videos=1",
    "eval.latency_repeats=1",
    "pipeline.compress=[]",
]
VIDEO_FRAMES = 48  # the root conftest's `write_video`: 48 frames at 30 fps, 24 at the example's 15


def readme_example() -> tuple[str, str, list[list[str]]]:
    """(config file name, config text, commands) of the README's video example; fails when the
    block changes shape (one yaml fence naming its file on its first line, then one bash fence)."""
    (block,) = EXAMPLE.findall(README.read_text())
    fences = re.findall(r"```(\w+)\n(.*?)```", block, re.DOTALL)
    assert [language for language, _ in fences] == ["yaml", "bash"], (
        "README video example: a yaml then a bash block"
    )
    (_, config), (_, script) = fences
    name = re.match(r"# (\S+\.yaml)", config)
    assert name, "the example config's first line names its file: # NAME.yaml"
    commands = [shlex.split(line, comments=True) for line in script.splitlines() if line.strip()]
    return name.group(1), config, commands


def write_videos(folder: Path, write_video, num_actions: int) -> None:
    """Six videos: .mp4 with .npy actions, .mkv with .jsonl (bare and {"action": ...} lines)."""
    folder.mkdir(parents=True)
    for index in range(6):
        actions = (np.arange(VIDEO_FRAMES) // 6 + index) % num_actions
        if index % 2 == 0:
            write_video(folder / f"run{index}.mp4")
            np.save(folder / f"run{index}.npy", actions)
        else:
            write_video(folder / f"run{index}.mkv")
            lines = [json.dumps({"action": int(a)}) if t % 2 else str(int(a)) for t, a in enumerate(actions)]
            (folder / f"run{index}.jsonl").write_text("\n".join(lines) + "\n")



@pytest.mark.slow  # a whole pipeline run (data, training, evaluation, registry) at test scale
def test_the_readme_video_example_trains_evaluates_and_registers_a_model(
    harness, project, monkeypatch, write_video, files_naming
):
    import mlflow

    from worldforge.data.manifest import read_manifest
    from worldforge.packages import package_md5

    name, config_text, commands = readme_example()
    config = yaml.safe_load(config_text)
    family, data, video = config["project"]["family"], config["data"], config["data"]["video"]
    assert [command[1:] for command in commands] == [
        ["data", "build", name],
        ["data", "inspect", f"datasets/{data['name']}"],
        ["pipeline", "run", name],
        ["registry", "list", family],
        ["lineage", f"models:/{family}/1"],
    ]
    root = project.root
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(config_text)
    write_videos(root / video["folder"], write_video, video["num_actions"])

    # Run in this process (the `worldforge` app, as the console script runs it) from the project
    # root, on one Prefect test server: a subprocess per command started torch, DeepSpeed, MLflow
    # and a Prefect server of its own five times (152 s for the test, against 60 s).
    monkeypatch.chdir(root)
    runner = CliRunner()
    outputs = []
    for command in commands:
        assert command[0] == "worldforge"
        extra = [option for o in TEST_SCALE for option in ("-o", o)] if name in command else []
        done = runner.invoke(app, [*command[1:], *extra])
        assert done.exit_code == 0, f"{shlex.join(command)}:\n{done.output[-3000:]}"
        outputs.append(done.output)

    manifest = read_manifest(root / "datasets" / data["name"])
    assert manifest.source == "video" and manifest.skipped == []
    assert manifest.action_space.model_dump(exclude_none=True) == {
        "kind": "discrete",
        "n": video["num_actions"],
    }
    (package,) = [p for p in (root / "packages").glob(f"{family}-pretrain_world-*") if p.is_dir()]
    metrics = json.loads((package / "metrics.json").read_text())
    assert metrics["psnr_mean"] > 0 and metrics["dataset"].startswith(
        f"datasets/{config['project']['name']}-"
    )
    assert files_naming(package, root) == []  # every path in the package is relative to the root
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    version = client.get_model_version(family, "1")
    assert version.tags["package.md5"] == package_md5(package)
    assert metrics["dataset"] in outputs[-1]  # lineage traced the registered version back to its dataset
