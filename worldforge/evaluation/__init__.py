"""Rollout quality and cost metrics, and reports (JSON, plots, videos).

    from worldforge.evaluation import evaluate_package

- `metrics`: PSNR, SSIM, sharpness, copy-last-frame baseline, motion ratio (pure functions)
- `objects`: the simulator's agent and balls found in frames (positions, compact balls)
- `realism`: frames redrawn by the simulator where their objects are read; realism PSNR, survival
- `rollout_eval`: held-out clips from a dataset, rollouts, scores (also of a long rollout's prefixes)
- `long_play`: long plays past held-out episodes, scored against the simulator's continuation
- `cost`: parameters, FLOPs, frames/s, latency, peak memory
- `report`: report.json, quality-vs-horizon plots (`plot_models`), side-by-side videos
- `page`: report.html
- `evaluate`: the stage function `evaluate_package`

Submodules are imported lazily: `worldforge.config` imports `evaluation.config`, and
loading the config must stay light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_package": "evaluate",
    "EvaluationError": "rollout_eval",
}

__all__ = ["EvaluationError", "evaluate_package"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worldforge.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"worldforge.evaluation.{_EXPORTS[name]}"), name)
