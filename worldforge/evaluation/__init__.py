"""Rollout quality and cost metrics, and reports (JSON, plots, videos).

    from worldforge.evaluation import evaluate_package

- `metrics`: PSNR, SSIM, copy-last-frame baseline, agent position error (pure functions)
- `rollout_eval`: held-out clips from a dataset, rollouts, scores
- `cost`: parameters, FLOPs, frames/s, latency, peak memory
- `report`: report.json, PSNR-vs-horizon plot, side-by-side videos
- `gates`: promotion gates against the champion's recorded metrics
- `evaluate`: the stage function `evaluate_package`

Submodules are imported lazily: `worldforge.config` imports `evaluation.config`, and
loading the config must stay light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_package": "evaluate",
    "EvaluationError": "rollout_eval",
    "check_gates": "gates",
}

__all__ = ["EvaluationError", "check_gates", "evaluate_package"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worldforge.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"worldforge.evaluation.{_EXPORTS[name]}"), name)
