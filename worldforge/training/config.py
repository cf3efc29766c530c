"""The `train` section: how the one trainer runs (steps, batch, optimizer, schedule, DeepSpeed,
checkpoints, validation, time budget).

Batch arithmetic: one optimizer step consumes `batch_size * grad_accumulation * world_size`
clips, where `batch_size` is the micro-batch per process (per GPU). The training loader's batch
is this micro-batch (`data.loader.batch_size` is not used by training), so there is one value.
Activation checkpointing is the model's own switch, `model.grad_checkpointing`.

The DeepSpeed JSON named by `deepspeed` holds only what is DeepSpeed's own (the ZeRO stage,
offload, communication settings); batch sizes, optimizer, schedule, clipping and precision come
from this section (see `worldforge/training/deepspeed_config.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from worldforge.core.schema import Section


class ValidationConfig(Section):
    """Periodic validation during training on held-out episodes. The world model is scored as the
    evaluation stage scores it (`worldforge.evaluation`: rollouts of `eval.context_frames` +
    `eval.horizon` frames, PSNR/SSIM per step against copy-last-frame), on the `split` here."""

    every: int = Field(200, ge=0, description="optimizer steps between validations; 0: only at the end")
    split: str = Field(
        "val", description="held-out split used during training (the test split stays for evaluation)"
    )
    episodes: int = Field(
        8, ge=1, description="held-out episodes rolled out (world) or reconstructed (tokenizer)"
    )
    gif: bool = Field(True, description="log a GIF of rollouts next to ground truth as an MLflow artifact")


class TrainConfig(Section):
    # Length and batch
    steps: int = Field(1000, ge=1, description="optimizer steps of world-model pretraining")
    tokenizer_steps: int = Field(
        1000, ge=1, description="optimizer steps of tokenizer pretraining (vae only)"
    )
    batch_size: int = Field(8, ge=1, description="micro-batch of clips per process")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="wall-clock budget of the training loop; stops early (checkpoint + package) when spent",
    )

    # Optimizer (AdamW) and schedule (linear warmup, then cosine to min_lr_ratio * lr)
    lr: float = Field(3e-4, gt=0)
    tokenizer_lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=1, description="capped at the run's steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine ends at lr * this")
    lr_schedule: Literal["steps", "budget"] = Field(
        "steps",
        description=(
            "what the cosine runs over: steps, or with max_minutes set, budget: the steps or the "
            "budget, whichever runs out first, so a slower machine still ends annealed"
        ),
    )
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")
    ema_decay: float = Field(
        0.999,
        ge=0,
        lt=1,
        description="EMA of trainable weights (warmed up as min(decay, (1+n)/(10+n))); 0 disables",
    )
    max_nonfinite: int = Field(
        3,
        ge=0,
        description="micro-batches in a row with a NaN/inf loss that are skipped before the run stops",
    )

    # Engine
    deepspeed: str = Field(
        "zero2",
        description="a DeepSpeed config in infra/deepspeed (zero0..zero3, zero2-offload, zero3-offload) or a JSON path",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the model (DeepSpeed engine.compile)")
    device: str = Field(
        "auto", description="auto | cpu | cuda; with several processes each takes cuda:LOCAL_RANK"
    )
    peak_tflops: float | None = Field(
        None, gt=0, description="device peak for MFU; default: known GPUs only (CPU MFU is not reported)"
    )

    # Checkpoints, logging, validation
    checkpoint_every: int = Field(
        200, ge=0, description="optimizer steps between checkpoints; 0: only at the end"
    )
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept; older ones are deleted")
    checkpoint_dir: Path | None = Field(None, description="default <root>/checkpoints/<package name>")
    log_every: int = Field(10, ge=1, description="optimizer steps between metric logs")
    validation: ValidationConfig = ValidationConfig()
    system_metrics: bool = Field(
        True, description="MLflow system metrics (CPU, memory, GPU) for the stage run"
    )
