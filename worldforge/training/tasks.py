"""The pretraining tasks: what the trainer trains for the tokenizer and for the world model.

Both train a `WorldModel` (so both stages write a `world_model` package): the tokenizer stage
trains only its tokenizer (the DiT stays at its initialisation and frozen), the world stage only
its DiT (the pretrained tokenizer frozen). Validation scores what the evaluation stage scores,
with `worldforge.evaluation`'s functions, on the held-out split of `train.validation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldforge.config import WorldforgeConfig
from worldforge.core.runtime import select_device
from worldforge.data.loader import make_loader
from worldforge.data.manifest import read_manifest
from worldforge.errors import WorldforgeError
from worldforge.evaluation import report
from worldforge.evaluation.rollout_eval import (
    baseline_scores,
    check_compatible,
    detector_floor,
    load_clips,
    predict,
    score,
)
from worldforge.evaluation.sensitivity import model_sensitivity
from worldforge.models.objective import flow_matching_loss
from worldforge.models.tokenizer_objective import reconstruction_psnr, tokenizer_loss
from worldforge.models.world_model import WorldModel, build_world_model, package_config
from worldforge.training.launch import setup_distributed
from worldforge.training.stream import BatchStream
from worldforge.training.trainer import Critic, Task, Trainer


class WorldObjective(nn.Module):
    """Flow-matching loss of the world DiT on a batch of clips; the tokenizer encodes without grad."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # frames (B, T, C, H, W) in [-1, 1]; actions (B, T) or (B, T, A)
        return flow_matching_loss(self.model, batch["frames"], batch["actions"])


class TokenizerObjective(nn.Module):
    """Reconstruction + KL loss of the tokenizer on a batch of clips."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return tokenizer_loss(self.model.tokenizer, batch["frames"])


def train_batches(config: WorldforgeConfig, dataset: Path, rank: int, world_size: int) -> BatchStream:
    """This rank's training clips: full micro-batches of `train.batch_size` (the loader's batch size
    is the trainer's micro-batch), endless over epochs."""
    loader_cfg = config.data.loader.model_copy(
        update={"batch_size": config.train.batch_size, "drop_last": True}
    )
    data = config.data.model_copy(update={"loader": loader_cfg})
    loader = make_loader(dataset, "train", data, rank=rank, world_size=world_size)
    return BatchStream(loader, f"{dataset} split 'train' (rank {rank} of {world_size})")


def check_dataset(model: WorldModel, dataset: Path) -> None:
    """Refuse a dataset whose frames or actions the model cannot take, naming both fields."""
    manifest = read_manifest(dataset)
    height, width, channels = manifest.frame_shape
    tokenizer, dit = model.tokenizer_cfg, model.model_cfg
    if (height, width) != tuple(tokenizer.frame_size) or channels != tokenizer.frame_channels:
        raise WorldforgeError(
            f"{dataset}/manifest.json: frames are {height}x{width}x{channels}, but tokenizer.frame_size is "
            f"{tuple(tokenizer.frame_size)} with {tokenizer.frame_channels} channels; set tokenizer.frame_size "
            f"to [{height}, {width}] (or build the dataset at data.resolution={tokenizer.frame_size[0]})"
        )
    space = manifest.action_space
    if space.kind != dit.action_space:
        raise WorldforgeError(
            f"{dataset}: {space.kind} actions, but model.action_space is {dit.action_space!r}"
        )
    if space.kind == "discrete" and space.n > dit.num_actions:
        raise WorldforgeError(
            f"{dataset}: {space.n} discrete actions, but model.num_actions is {dit.num_actions}"
        )
    if space.kind == "continuous" and space.dim != dit.action_dim:
        raise WorldforgeError(
            f"{dataset}: actions of dimension {space.dim}, but model.action_dim is {dit.action_dim}"
        )


def tokens_per_clip(model: WorldModel, frames: int) -> int:
    """DiT tokens of one clip of `frames` frames: latent frames x (h / p) x (w / p)."""
    config = model.tokenizer_cfg
    p = model.model_cfg.patch_size
    latent_frames = model.tokenizer.latent_frames(frames)
    return (
        latent_frames
        * (config.frame_size[0] // config.compression // p)
        * (config.frame_size[1] // config.compression // p)
    )


def _validation_clips(config: WorldforgeConfig, dataset: Path):
    eval_cfg = config.eval.model_copy(
        update={"split": config.train.validation.split, "episodes": config.train.validation.episodes}
    )
    return eval_cfg, load_clips(dataset, eval_cfg)


def _device(config: WorldforgeConfig) -> torch.device:
    device = select_device(config.train.device)
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


def world_validation(config: WorldforgeConfig, dataset: Path, package: dict[str, Any]):
    """validate(state, step, folder): rollout PSNR/SSIM per horizon step on held-out episodes,
    next to copy-last-frame, action sensitivity (and on simulator data agent/ball error, realism and ball survival,
    next to copy-last-frame's and the recorded frames'), and a GIF of the first rollouts next to
    ground truth."""
    cache: dict[str, Any] = {}

    def validate(state: dict[str, torch.Tensor], step: int, folder: Path) -> dict[str, float]:
        if not cache:  # loaded on first use, on rank 0 only
            cache["eval"], cache["clips"] = _validation_clips(config, dataset)
        eval_cfg, clips = cache["eval"], cache["clips"]
        baseline, truth = baseline_scores(clips), detector_floor(clips)  # scored once per clips
        device = _device(config)
        model = build_world_model(package)
        model.load_state_dict(state)
        model.to(device).eval()
        check_compatible(model, clips, eval_cfg, "the model in training")
        prediction = predict(model, clips, eval_cfg, device)
        scores = score(prediction, clips)
        metrics = {
            "val/psnr_mean": scores["psnr_mean"],
            "val/ssim_mean": scores["ssim_mean"],
            "val/baseline_psnr_mean": baseline["baseline_psnr_mean"],
            "val/psnr_gain_over_baseline": scores["psnr_mean"] - baseline["baseline_psnr_mean"],
        }
        for h, (model_psnr, base_psnr, ssim) in enumerate(
            zip(scores["psnr_per_step"], baseline["baseline_psnr_per_step"], scores["ssim_per_step"]), start=1
        ):
            metrics[f"val/psnr_h{h}"] = model_psnr
            metrics[f"val/baseline_psnr_h{h}"] = base_psnr
            metrics[f"val/ssim_h{h}"] = ssim
        for what in ("agent", "object"):
            key = f"{what}_position_error"
            if key in scores:
                metrics[f"val/{key}"] = scores[key]
                metrics[f"val/baseline_{key}"] = baseline[f"baseline_{key}"]
                metrics[f"val/{what}_error_ratio"] = scores[key] / baseline[f"baseline_{key}"]
                metrics[f"val/{what}_found_fraction"] = scores[f"{what}_found_fraction"]
                for h, value in enumerate(scores[f"{key}_per_step"], start=1):
                    metrics[f"val/{key}_h{h}"] = value
        sensitivity = model_sensitivity(model, clips, eval_cfg, device, prediction)  # every dataset
        if sensitivity:
            metrics["val/action_sensitivity_db_mean"] = sensitivity["action_sensitivity_db_mean"]
        for key in ("realism_psnr_mean", "object_survival"):  # simulator data (`evaluation.realism`)
            if key in scores:
                metrics[f"val/{key}"] = scores[key]
                metrics[f"val/baseline_{key}"] = baseline[f"baseline_{key}"]
                metrics[f"val/truth_{key}"] = truth[f"truth_{key}"]
        if config.train.validation.gif:
            report.write_videos(folder, clips, {"model": prediction}, count=2)
        return metrics

    return validate


def tokenizer_validation(config: WorldforgeConfig, dataset: Path, package: dict[str, Any]):
    """validate(state, step, folder): reconstruction PSNR of held-out clips (and a GIF of them)."""
    cache: dict[str, Any] = {}

    def validate(state: dict[str, torch.Tensor], step: int, folder: Path) -> dict[str, float]:
        if not cache:
            cache["eval"], cache["clips"] = _validation_clips(config, dataset)
        clips = cache["clips"]
        device = _device(config)
        model = build_world_model(package)
        model.load_state_dict(state)
        tokenizer = model.tokenizer.to(device).eval()
        frames = torch.cat([clips.context, clips.target], dim=1).to(device)  # (N, T, C, H, W)
        metrics = {"val/reconstruction_psnr": reconstruction_psnr(tokenizer, frames)}
        if config.train.validation.gif:
            with torch.no_grad():
                rebuilt = tokenizer.decode(tokenizer.encode(frames[:1])).clamp(-1, 1).cpu()
            video = report.side_by_side([frames[0].cpu(), rebuilt[0]], context_frames=0)
            report.write_gif(folder / "reconstruction.gif", video, clips.fps)
        return metrics

    return validate


def world_task(
    config: WorldforgeConfig, model: WorldModel, dataset: Path, rank: int, world_size: int
) -> Task:
    """Train the DiT of `model`; its tokenizer (pretrained, or the patch tokenizer) stays frozen."""
    check_dataset(model, dataset)
    model.tokenizer.requires_grad_(False)
    model.dit.requires_grad_(True)
    package = package_config(model)
    return Task(
        name="world",
        objective=WorldObjective(model),
        batches=train_batches(config, dataset, rank, world_size),
        package_prefix="model.",
        package_config=package,
        tokens_per_sample=tokens_per_clip(model, config.data.clip_frames),
        validate=world_validation(config, dataset, package),
    )


def tokenizer_task(
    config: WorldforgeConfig, model: WorldModel, dataset: Path, rank: int, world_size: int
) -> Task:
    """Train the tokenizer of `model` (a `vae`); the DiT is left as initialised and frozen."""
    check_dataset(model, dataset)
    model.dit.requires_grad_(False)
    model.tokenizer.requires_grad_(True)
    package = package_config(model)
    c = model.tokenizer_cfg
    latent_cells = (c.frame_size[0] // c.compression) * (c.frame_size[1] // c.compression)
    return Task(
        name="tokenizer",
        objective=TokenizerObjective(model),
        batches=train_batches(config, dataset, rank, world_size),
        package_prefix="model.",
        package_config=package,
        tokens_per_sample=model.tokenizer.latent_frames(config.data.clip_frames) * latent_cells,
        validate=tokenizer_validation(config, dataset, package),
    )


class FrozenTeacher(nn.Module):
    """Base of the objectives that train a world model's DiT (`model`) against a frozen `teacher`
    (distillation, pruning recovery): the student's tokenizer and the whole teacher take no
    gradients, and the teacher stays in eval mode whatever the trainer switches."""

    def __init__(self, model: WorldModel, teacher: WorldModel):
        super().__init__()
        self.model, self.teacher = model, teacher
        model.tokenizer.requires_grad_(False)
        model.dit.requires_grad_(True)
        teacher.requires_grad_(False)
        teacher.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(mode)
        self.teacher.eval()
        return self


def train_student(
    name: str,
    objective: nn.Module,
    student: WorldModel,
    prefix: str,
    config: WorldforgeConfig,
    dataset: Path,
    steps: int,
    lr: float,
    seed: int,
    checkpoint_dir: Path,
    track: bool,
    resume: bool = False,
    critic: Critic | None = None,
) -> tuple[WorldModel, dict[str, Any]]:
    """Train `objective` (whose submodule at `prefix` is `student`) for `steps` steps on the shared
    `Trainer` (micro-batch, engine, EMA, checkpoints, validation of `config.train`) on `dataset`'s
    train split, with a `critic` trained in turn when given (DMD's fake score); collective under a
    launcher. Returns the trained student (the package weights:
    EMA when enabled), on the student's device, and a record of the run (steps, how it stopped,
    first/last losses, final validation)."""
    info, _ = setup_distributed(config.train.device)
    package = package_config(student)
    trainer = Trainer(
        Task(
            name=name,
            objective=objective,
            batches=train_batches(config, dataset, info.rank, info.world_size),
            package_prefix=prefix,
            package_config=package,
            tokens_per_sample=tokens_per_clip(student, config.data.clip_frames),
            validate=world_validation(config, dataset, package),
            critic=critic,
        ),
        config.train,
        steps=steps,
        lr=lr,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        track=track,
        progress=True,  # rank 0: a bar on a terminal, a plain line every 100 steps / 30 s elsewhere
    )
    result = trainer.fit(resume=resume)
    trained = build_world_model(package)
    trained.load_state_dict(trainer.package_state(), strict=True)
    window = max(1, min(10, len(result.losses)))
    record = {
        "steps": result.step,
        "lr": lr,
        "stopped": result.stopped,
        "loss_first": sum(result.losses[:window]) / window if result.losses else None,
        "loss_last": sum(result.losses[-window:]) / window if result.losses else None,
        "validation": result.metrics,
    }
    return trained.to(next(student.dit.parameters()).device).eval(), record
