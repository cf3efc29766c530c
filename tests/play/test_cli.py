"""`worldforge play` as a user runs it: the console script serves the page until stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from typer.testing import CliRunner

from worldforge.cli import app
from worldforge.core.runtime import free_port


def test_play_serves_the_page_on_loopback_until_interrupted(project, make_world_model, held_out_dataset):
    """The dataset comes from the package's lineage (the one it was trained on) when --dataset is
    not given."""
    from worldforge.models.world_model import package_config
    from worldforge.packages import save_package

    model = make_world_model(context_window=3)
    lineage = {"stage": "pretrain_world", "dataset": str(held_out_dataset)}
    package = save_package(project.packages / "model", package_config(model), model, lineage=lineage)
    port = free_port()
    command = [sys.executable, "-m", "worldforge", "play", str(package)]
    server = subprocess.Popen(
        [*command, "--no-browser", "--port", str(port), "--context", "3", "--episodes", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WORLDFORGE_ROOT": str(project.root)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2) as response:
                    info = json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the play server did not answer within 120 s"
                time.sleep(0.5)
        assert info["model"] == str(package) and len(info["episodes"]) == 2 and info["context_frames"] == 3
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert b"worldforge play" in response.read()
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}/" in output and "Traceback" not in output, output


def test_play_without_a_dataset_says_how_to_get_one(project, package):
    result = CliRunner().invoke(app, ["play", str(package), "--no-browser"])
    assert result.exit_code == 2
    assert "manifest.json: no dataset there" in result.output and "worldforge data build" in result.output
    assert "Traceback" not in result.output


def test_play_of_a_missing_package_is_one_clear_error(project, held_out_dataset, tmp_path):
    result = CliRunner().invoke(app, ["play", str(tmp_path / "nope"), "--dataset", str(held_out_dataset)])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
