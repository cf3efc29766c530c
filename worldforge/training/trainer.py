"""The one trainer: tokenizer pretraining, world-model pretraining, distillation and pruning
recovery all run through `Trainer`, each with its own `Task`.

A `Task` says what to train; the trainer owns how: the DeepSpeed engine (ZeRO 0-3, offload,
bf16 / fp32), gradient accumulation and clipping, the warmup + cosine schedule (over the steps, or
with `train.lr_schedule: budget` over whichever of the steps and `train.max_minutes` runs out
first), the EMA, NaN guarding, checkpoints (every N steps, on SIGTERM/SIGINT, newest K kept, exact
resume; a resumed run goes on with what is left of its wall-clock budget), periodic validation,
metrics (rank 0 logs them to the active MLflow run) and the progress line.

Reproducibility across world sizes and resumes: micro-batch g (counted over all ranks, in order)
runs with the global RNG seeded by (seed, g), so its noise does not depend on how many processes
share the work or whether the run was interrupted; a loss is all-reduced before it is logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from worldforge.core import tracking
from worldforge.errors import WorldforgeError
from worldforge.packages import save_package
from worldforge.training.checkpoint import Checkpointer
from worldforge.training.config import TrainConfig
from worldforge.training.consolidate import consolidated_state
from worldforge.training.deepspeed_config import build_deepspeed_config, zero_stage
from worldforge.training.ema import ShardedEMA
from worldforge.training.interrupt import StopRequest
from worldforge.training.launch import barrier, resolve_precision, setup_distributed
from worldforge.training.progress import ProgressLine, validation_line
from worldforge.training.schedule import scheduler_factory, warmup_cosine
from worldforge.training.throughput import FlopCount, Throughput, device_peak_flops, peak_memory_mb

log = logging.getLogger(__name__)


class NonFiniteLossError(WorldforgeError, FloatingPointError):
    """The loss stayed NaN/inf for more micro-batches in a row than train.max_nonfinite allows."""


class TrainingInterrupted(WorldforgeError, RuntimeError):
    """Stopped by SIGTERM/SIGINT after saving a checkpoint; `--resume` continues the run."""

    def __init__(self, message: str, signal: str, checkpoint: Path):
        super().__init__(message)
        self.signal, self.checkpoint = signal, checkpoint


class Batches(Protocol):
    """This rank's micro-batches: dicts of tensors, endless, with a resumable position."""

    def __next__(self) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass
class Critic:
    """A second network trained in turn with a task's objective: DMD's fake score. It has its own
    DeepSpeed engine, optimizer and learning-rate schedule; before each micro-batch of the
    objective it takes `updates` micro-steps on that same micro-batch (`objective.forward(batch)
    -> (loss, logs)`, logged as `<name>_<key>`). The networks must not overlap: each parameter
    belongs to one engine (hold the other's network as a plain attribute, not a submodule), and a
    call to the other's network gathers its parameters first (`deepspeed.zero.GatheredParameters`:
    under ZeRO-3 they are partitioned outside their own engine's forward)."""

    name: str
    objective: nn.Module
    lr: float
    updates: int = 1


@dataclass
class Task:
    """What one training stage trains.

    objective: `forward(batch) -> (loss, logs)`; its parameters with requires_grad are trained, the
      others (a pretrained tokenizer, a teacher) stay frozen. Floating batch tensors arrive on the
      device in the compute dtype.
    package_prefix: the objective's submodule saved as the model package ("model." etc.; "" = all).
    validate(state, step, folder) -> metrics: on rank 0, with the package's consolidated weights
      (EMA when enabled); files it writes into `folder` are logged as artifacts."""

    name: str
    objective: nn.Module
    batches: Batches
    package_prefix: str
    package_config: dict[str, Any]
    tokens_per_sample: int
    validate: Callable[[dict[str, torch.Tensor], int, Path], dict[str, float]] | None = None
    critic: Critic | None = None


@dataclass
class TrainResult:
    step: int
    stopped: str  # "steps" (all done) or "time budget"
    losses: list[float]  # the mean loss of every optimizer step of this process's run, in order
    metrics: dict[str, float] = field(default_factory=dict)  # the final validation
    checkpoint: Path | None = None
    nonfinite_skipped: int = 0
    rates: dict[str, float] = field(default_factory=dict)  # throughput of the last log window


def micro_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def optimizer_parameters(objective: nn.Module, lr: float) -> list:
    """What an engine's optimizer gets: an objective's `param_groups(lr)` where its players learn at
    rates of their own (DMD's critic), else its trainable parameters at `lr`."""
    groups = getattr(objective, "param_groups", None)
    return groups(lr) if groups else [p for p in objective.parameters() if p.requires_grad]


class Trainer:
    def __init__(
        self,
        task: Task,
        train: TrainConfig,
        *,
        steps: int,
        lr: float,
        seed: int,
        checkpoint_dir: Path,
        track: bool = False,
        progress: bool = False,
    ):
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        self.task, self.train, self.steps, self.seed = task, train, steps, seed
        self.dist, self.device = setup_distributed(train.device)
        self.rank, self.world = self.dist.rank, self.dist.world_size
        self.track = track and self.rank == 0
        self.precision = resolve_precision(train.precision, self.device)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.ds_config = build_deepspeed_config(train, lr=lr, world_size=self.world, precision=self.precision)
        self.zero_stage = zero_stage(self.ds_config)
        trainable = [p for p in task.objective.parameters() if p.requires_grad]
        if not trainable:
            raise WorldforgeError(f"task {task.name!r}: the objective has no trainable parameters")
        self.schedules = [warmup_cosine(steps, train.warmup_steps, train.min_lr_ratio)]
        self.engine, _, _, _ = deepspeed.initialize(
            model=task.objective,
            model_parameters=optimizer_parameters(task.objective, lr),
            config=self.ds_config,
            lr_scheduler=scheduler_factory(self.schedules[0]),
        )
        if train.compile:
            self.engine.compile()
        self.critic = self._critic_engine(task.critic, train, steps) if task.critic else None
        self.ema = (
            ShardedEMA(self.engine.module, train.ema_decay, self.rank, self.world, self.device)
            if train.ema_decay > 0
            else None
        )
        self.checkpoints = Checkpointer(checkpoint_dir, train.keep_checkpoints, self.rank, self.world)
        samples_per_step = train.batch_size * train.grad_accumulation * self.world
        peak = device_peak_flops(self.device, self.precision, train.peak_tflops)
        self.throughput = Throughput(samples_per_step, task.tokens_per_sample, self.world, peak)
        self.flops = FlopCount()
        self.step = 0  # optimizer steps done
        self.trained_micro = 0  # micro-batches this rank has trained on
        self.skipped = 0
        self.elapsed_s = 0.0  # wall-clock seconds of training before this fit (a resumed run's)
        self._started = time.monotonic()
        self.losses: list[float] = []
        self.rates: dict[str, float] = {}
        self.progress = ProgressLine(task.name, steps, enabled=progress and self.rank == 0)

    def _critic_engine(self, critic: Critic, train: TrainConfig, steps: int):
        """The critic's own engine: the same DeepSpeed settings, its own optimizer and schedule."""
        import deepspeed

        config = build_deepspeed_config(train, lr=critic.lr, world_size=self.world, precision=self.precision)
        self.schedules.append(warmup_cosine(steps * critic.updates, train.warmup_steps, train.min_lr_ratio))
        engine, _, _, _ = deepspeed.initialize(
            model=critic.objective,
            model_parameters=optimizer_parameters(critic.objective, critic.lr),
            config=config,
            lr_scheduler=scheduler_factory(self.schedules[-1]),
        )
        return engine

    # ---- state ---------------------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "trained_micro": self.trained_micro,
            "skipped": self.skipped,
            "elapsed_s": self._spent(),
            "data": self.task.batches.state(),
            "ema": self.ema.state_dict() if self.ema else None,
        }

    def _spent(self) -> float:
        """Wall-clock seconds this run has trained, a resumed run's earlier ones included."""
        return self.elapsed_s + time.monotonic() - self._started

    def _extra_engines(self) -> dict[str, Any]:
        return {self.task.critic.name: self.critic} if self.critic else {}

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "package_config": self.task.package_config,
            "package_prefix": self.task.package_prefix,
            "deepspeed": self.ds_config,
        }

    def save_checkpoint(self) -> Path:
        """Checkpoint the current step (collective)."""
        self.throughput.stop()
        path = self.checkpoints.save(
            self.engine, self.step, self._rank_state(), self._checkpoint_meta(), self._extra_engines()
        )
        log.info("checkpoint %s", path)
        self.throughput.start()
        return path

    def _resume(self) -> None:
        latest = self.checkpoints.latest()
        if latest is None:
            log.warning(
                "resume: no complete checkpoint in %s; starting from step 0", self.checkpoints.directory
            )
            return
        expected = {k: v for k, v in self._checkpoint_meta().items() if k != "deepspeed"}
        state = self.checkpoints.load(self.engine, latest, expected, self._extra_engines())
        self.step, self.trained_micro, self.skipped = state["step"], state["trained_micro"], state["skipped"]
        self.elapsed_s = state.get("elapsed_s", 0.0)  # checkpoints before lr_schedule did not keep it
        self.task.batches.restore(state["data"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        log.info("resumed from %s at step %d", latest, self.step)
        if self.track:  # a resumed run is a new MLflow run; it names where it took over
            tracking.set_tags({"resumed_from": str(latest)})

    # ---- one optimizer step --------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                dtype = self.dtype if value.is_floating_point() else None
                value = value.to(self.device, dtype=dtype, non_blocking=True)
            moved[key] = value
        return moved

    def _all_agree(self, value: float, op=dist.ReduceOp.MIN) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=op)
        return float(tensor.item())

    def _skip_nonfinite(self, loss: torch.Tensor, batch: dict[str, Any], consecutive: int) -> None:
        self.skipped += 1
        where = ", ".join(
            f"{key} {batch[key].tolist()}"
            for key in ("episode", "start")
            if isinstance(batch.get(key), torch.Tensor)
        )
        message = (
            f"non-finite loss ({float(loss.detach()):.4g} on rank {self.rank}) at step {self.step + 1}, "
            f"micro-batch {self.trained_micro}{' (' + where + ')' if where else ''}: skipped on every rank, not trained on"
        )
        log.warning(message)
        if self.track:
            tracking.log_metrics({"train/nonfinite_skipped": self.skipped}, step=self.step + 1)
            tracking.set_tags({"train.nonfinite_last": message[:500]})
        if consecutive > self.train.max_nonfinite:
            raise NonFiniteLossError(
                f"{message}\nthe loss was non-finite on {consecutive} micro-batches in a row "
                f"(train.max_nonfinite={self.train.max_nonfinite}); the weights are those of step {self.step}. "
                "Lower train.lr, check the data, or resume from the last checkpoint"
            )

    def _train_step(self) -> tuple[float, float | None, dict[str, float]]:
        """One optimizer step over `grad_accumulation` finite micro-batches.
        Returns this rank's mean loss, the global grad norm and the objective's scalar logs."""
        losses, logs, consecutive, manual_norm = [], {}, 0, None
        while len(losses) < self.train.grad_accumulation:
            batch = self._to_device(next(self.task.batches))
            torch.manual_seed(micro_seed(self.seed, self.trained_micro * self.world + self.rank))
            if self.critic:
                logs.update(self._critic_steps(batch))
            counting = self.flops.total is None
            with self.flops.measure() if counting else contextlib.nullcontext():
                loss, micro_logs = self.engine(batch)
                finite = self._all_agree(float(torch.isfinite(loss.detach()).all())) > 0
                if finite:
                    self.engine.backward(loss)
            if not finite:
                self.flops.total = None if counting else self.flops.total
                consecutive += 1
                self._skip_nonfinite(loss, batch, consecutive)
                continue
            consecutive = 0
            if counting and self.throughput.flops_per_sample is None:
                self.throughput.flops_per_sample = self.flops.total / self.train.batch_size
            if self.engine.is_gradient_accumulation_boundary() and self.zero_stage == 0:
                manual_norm = self._grad_norm()
            self.engine.step()
            self.trained_micro += 1
            losses.append(float(loss.detach()))
            for key, value in micro_logs.items():
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    logs[key] = logs.get(key, 0.0) + float(value) / self.train.grad_accumulation
        norm = self.engine.get_global_grad_norm()
        norm = manual_norm if norm is None else float(norm)
        return sum(losses) / len(losses), norm, logs

    def _critic_steps(self, batch: dict[str, Any]) -> dict[str, float]:
        """The critic's `updates` micro-steps on `batch`; a non-finite critic loss (on any rank) is
        skipped like the objective's. Returns its logs, averaged over the updates."""
        critic, logs = self.task.critic, {}
        for _ in range(critic.updates):
            loss, micro_logs = self.critic(batch)
            if self._all_agree(float(torch.isfinite(loss.detach()).all())) == 0:
                log.warning(
                    "non-finite %s loss at step %d: that update is skipped", critic.name, self.step + 1
                )
                continue
            self.critic.backward(loss)
            self.critic.step()
            for key, value in micro_logs.items():
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    name = f"{critic.name}_{key}"
                    logs[name] = logs.get(name, 0.0) + float(value) / (
                        critic.updates * self.train.grad_accumulation
                    )
        return logs

    def _grad_norm(self) -> float:
        """ZeRO-0 keeps no global grad norm; the gradients are whole (and averaged) on every rank."""
        norms = [
            p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None
        ]
        return float(torch.stack(norms).norm()) if norms else 0.0

    # ---- validation, package -------------------------------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """The package's weights (EMA when enabled), fp32 on the CPU of every rank. Collective."""
        return consolidated_state(self.engine.module, self.task.package_prefix, self.ema)

    def validate(self) -> dict[str, float]:
        """Run the task's validation on rank 0 with the package weights; others wait. Collective."""
        if self.task.validate is None:
            return {}
        self.throughput.stop()
        state = self.package_state()
        metrics: dict[str, float] = {}
        if self.rank == 0:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="worldforge-validation-") as folder:
                metrics = self.task.validate(state, self.step, Path(folder))
                if self.track:
                    tracking.log_metrics(metrics, step=self.step)
                    if any(Path(folder).iterdir()):
                        tracking.log_artifacts(Path(folder), f"validation/step{self.step:08d}")
            log.debug(
                "validation at step %d: %s", self.step, _short(metrics)
            )  # all of it; people get the line below
            self.progress.print(validation_line(self.step, metrics))
        barrier()
        self.throughput.start()
        return metrics

    def export_package(self, path: Path, lineage: dict[str, Any], metrics: dict[str, Any]) -> Path:
        """Write the model package (rank 0) from the consolidated weights. Collective."""
        state = self.package_state()
        if self.rank == 0:
            save_package(path, self.task.package_config, state, lineage=lineage, metrics=metrics)
        barrier()
        return Path(path)

    # ---- the loop ------------------------------------------------------------------------------
    def _log(self, window: list[tuple[float, float | None, dict[str, float]]]) -> None:
        losses = [loss for loss, _, _ in window]
        norms = [norm for _, norm, _ in window if norm is not None]
        metrics = {
            "train/loss": sum(losses) / len(losses),
            "train/lr": float(self.engine.get_lr()[0]),
            "train/peak_memory_mb": peak_memory_mb(self.device),
            "train/epoch": float(self.task.batches.state().get("epoch", 0)),
        }
        self.rates = self.throughput.report()
        metrics.update({f"train/{k}": v for k, v in self.rates.items()})
        if norms:
            metrics["train/grad_norm"] = sum(norms) / len(norms)
        for key in window[-1][
            2
        ]:  # the objective's own logs (rank 0's), unless the trainer has the global value
            metrics.setdefault(f"train/{key}", sum(w[2].get(key, 0.0) for w in window) / len(window))
        if self.rank == 0:
            log.debug("step %d/%d %s", self.step, self.steps, _short(metrics))  # the progress line shows it
            if self.track:
                tracking.log_metrics(metrics, step=self.step)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until `steps` optimizer steps (or `train.max_minutes`) are done; checkpoint and
        validate along the way and at the end. Collective.

        Raises TrainingInterrupted after checkpointing on SIGTERM/SIGINT, NonFiniteLossError."""
        if resume:
            self._resume()
        else:
            self.checkpoints.clear()
        budget = self.train.max_minutes
        self._started = time.monotonic()
        # A resumed run goes on with what is left of the budget (as of its checkpoint).
        limit = budget * 60 if budget else math.inf
        by_budget = bool(budget) and self.train.lr_schedule == "budget"
        stopped, window, metrics = "steps", [], {}
        saved_at = self.step if self.checkpoints.latest() is not None else -1  # resumed: that step is saved
        self.engine.train()
        if self.critic:
            self.critic.train()
        with StopRequest() as stop, self.progress:
            self.progress.advance(self.step)
            self.throughput.start()
            while self.step < self.steps:
                loss, norm, logs = self._train_step()
                self.step += 1
                if self.ema:
                    self.ema.update()
                self.throughput.step()
                # One collective per step: the loss for the logs, and whether any rank must stop.
                spent = self._spent()
                flags = torch.tensor(
                    [loss, float(stop.signal is not None), float(spent > limit), spent],
                    dtype=torch.float64,
                    device=self.device,
                )
                if self.world > 1:
                    dist.all_reduce(flags)
                loss = float(flags[0]) / self.world
                if by_budget:  # the share of the budget spent, the same on every rank: the next step's lr
                    for schedule in self.schedules:
                        schedule.spent = float(flags[3]) / self.world / limit
                self.losses.append(loss)
                window.append((loss, norm, logs))
                self.progress.update(self.step, loss, self.throughput.samples_per_step)
                if self.step % self.train.log_every == 0 or self.step == self.steps:
                    self._log(window)
                    window = []
                every = self.train.validation.every
                if every and self.step % every == 0 and self.step < self.steps:
                    self.validate()
                if self.train.checkpoint_every and self.step % self.train.checkpoint_every == 0:
                    self.save_checkpoint()
                    saved_at = self.step
                if flags[1] > 0:
                    checkpoint = (
                        self.save_checkpoint() if saved_at != self.step else self.checkpoints.latest()
                    )
                    signal = stop.signal or "a signal on another rank"
                    raise TrainingInterrupted(
                        f"stopped by {signal} at step {self.step}/{self.steps}; checkpoint {checkpoint}; "
                        "run again with resume (--resume) to continue",
                        signal,
                        checkpoint,
                    )
                if flags[2] > 0:
                    stopped = "time budget"
                    log.warning(
                        "train.max_minutes=%s spent at step %d/%d: stopping", budget, self.step, self.steps
                    )
                    break
            if window:
                self._log(window)
            checkpoint = self.save_checkpoint() if saved_at != self.step else self.checkpoints.latest()
            metrics = self.validate()
        return TrainResult(
            self.step, stopped, list(self.losses), metrics, checkpoint, self.skipped, self.rates
        )


def _short(metrics: dict[str, float]) -> str:
    return " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in metrics.items())
