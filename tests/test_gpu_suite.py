"""`benchmarks/gpu_suite.py --smoke`: every code path of the GPU suite at tiny sizes on the CPU, so
that the script is known to run when a GPU is lent. CUDA-only rows are skipped with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_smoke_run_covers_every_section_and_marks_cuda_only_paths(tmp_path):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    rows = report["rows"]
    assert not [r for r in rows if r["status"] == "failed"]
    done = {(r["section"], r["name"]) for r in rows if r["status"] == "ok"}
    assert {section for section, _ in done} == {"training", "rollout", "fp8"}
    training = [r for r in rows if r["section"] == "training" and r["status"] == "ok"]
    assert len(training) == 2 and all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in training)
    rollouts = [r for r in rows if r["section"] == "rollout" and r["status"] == "ok" and "e2e_fps" in r]
    assert len(rollouts) == 4
    assert all(r["e2e_fps"] > 0 and r["latency_ms_p95"] >= r["latency_ms_median"] for r in rollouts)
    breaks = next(r for r in rows if r["name"] == "graph breaks of the rollout step")
    assert breaks["status"] == "ok" and breaks["graph_breaks"] == 0  # the compiled step stays one graph
    skipped = {r["name"]: r["reason"] for r in rows if r["status"] == "skipped"}
    assert "CUDA-only" in skipped["h100-base, bf16 + torch.compile"]
    assert "CUDA-only" in skipped["torch.compile of the DiT"] and "sm89" in skipped["torchao fp8_dynamic"]
    modelopt = next(r for r in rows if r["name"] == "modelopt")
    assert modelopt["psnr_vs_bf16"] > 30 and "kept" in modelopt["kept"]
    assert modelopt["agent_error"] >= 0 and "agent_error_change" in modelopt
    environment = report["environment"]
    assert environment["torch"] and "gpu_suite.py --smoke" in environment["command"]
    assert "## training" in (tmp_path / "gpu_suite.md").read_text()
