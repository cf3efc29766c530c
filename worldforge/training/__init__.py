"""The DeepSpeed trainer shared by pretraining, distillation and pruning recovery.

    from worldforge.training import Trainer, Task, pretrain_tokenizer, pretrain_world

Submodules are imported lazily: `worldforge.config` imports `training.config`, and
loading the config must stay light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Trainer": "trainer",
    "Task": "trainer",
    "TrainResult": "trainer",
    "TrainingInterrupted": "trainer",
    "NonFiniteLossError": "trainer",
    "pretrain_tokenizer": "pretrain",
    "pretrain_world": "pretrain",
    "run_stage": "pretrain",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worldforge.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"worldforge.training.{_EXPORTS[name]}"), name)
