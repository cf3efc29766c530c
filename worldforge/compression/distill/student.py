"""Smaller students: a DiT with fewer blocks and/or a narrower width, trained from the frozen teacher.

    student = build_student(teacher, config.student)        teacher's DiT, reduced; weights copied
                                                            where shapes allow
    objective = StudentObjective(student, teacher, config)   modelopt.torch.distill KD losses

Losses, on the rollout case of `distill_steps.rollout_case` (clean context, the new frame at a
noise level drawn as in pretraining, `objective.*` of the teacher):
- features: for each student block i, the MSE between its output (B, T, N, D_s), projected by a
  trained linear map when D_s != D_t, and the output of teacher block
  round((i + 1) * depth_t / depth_s) - 1, divided by the teacher feature's mean square (so
  blocks whose outputs grow along the depth weigh alike); over every frame of the clip, since the
  generated frame attends to the context frames' features;
- output: the MSE between the student's and the teacher's velocity of the generated frame;
- task (optional): the flow-matching MSE against the true velocity eps - x0.

What runs on what: `modelopt.torch.distill` (`mtd.convert` in mode `kd_loss`) wraps the student,
runs the frozen teacher in the same forward, captures the paired layers' outputs with its hooks
and computes the losses (`compute_kd_loss`), which a `DistillationLossBalancer` (ours: a fixed
weighted sum, since modelopt's `StaticLossBalancer` needs weights summing to 1) reduces. The
projections are plain torch modules owned by the objective, not by the loss modules: modelopt
collects parameter-holding loss modules into a `ModuleList` built from a set, whose order (and
hence checkpoint key of each projection) could differ between processes and break resume.
Student construction and weight copying are plain torch.
"""

from __future__ import annotations

import torch
from modelopt.torch.distill import DistillationLossBalancer
from modelopt.torch.distill.loss_balancers import STUDENT_LOSS_KEY
from torch import nn
from torch.nn.modules.loss import _Loss

from worldforge.compression.distill.config import DistillConfigError, StudentConfig
from worldforge.compression.distill.steps import RolloutCase, frame_velocity, rollout_case
from worldforge.models.objective import sample_noise_levels
from worldforge.models.world_model import WorldModel, build_world_model, package_config


def block_pairs(student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """(student block, teacher block): evenly spread, the last to the last."""
    return [(i, round((i + 1) * teacher_depth / student_depth) - 1) for i in range(student_depth)]


def student_config(teacher: WorldModel, config: StudentConfig) -> dict:
    """The package config of the student: the teacher's, with the DiT reduced as configured.
    Raises DistillConfigError naming `distill.student.*` when the shape is not smaller or invalid."""
    package = package_config(teacher)
    dit = teacher.model_cfg
    depth, width = config.depth or dit.depth, config.width or dit.width
    heads = config.heads or dit.heads
    if depth > dit.depth or width > dit.width or (depth, width) == (dit.depth, dit.width):
        raise DistillConfigError(
            f"distill.student: depth {depth}, width {width} is not smaller than the teacher's DiT "
            f"(depth {dit.depth}, width {dit.width}); set distill.student.depth and/or distill.student.width lower"
        )
    if width % heads:
        raise DistillConfigError(
            f"distill.student.width {width} is not divisible by {heads} heads; set distill.student.heads"
        )
    model = dict(package["model"])
    model.update(
        depth=depth,
        width=width,
        heads=heads,
        head_dim=None,
        heads_per_block=None,
        mlp_hidden_per_block=[int(width * dit.mlp_ratio)] * depth,
    )
    return {**package, "model": model}


def build_student(teacher: WorldModel, config: StudentConfig, seed: int) -> WorldModel:
    """The reduced student, seeded; every tensor whose shape matches its teacher counterpart
    (the tokenizer, and at equal width the embeddings, the final layer and the paired blocks)
    is copied from the teacher, so a depth-only reduction starts from the teacher's own blocks."""
    package = student_config(teacher, config)
    torch.manual_seed(seed)
    student = build_world_model(package)
    rename = {
        f"dit.blocks.{i}.": f"dit.blocks.{j}."
        for i, j in block_pairs(student.model_cfg.depth, teacher.model_cfg.depth)
    }
    source = teacher.state_dict()
    state = student.state_dict()
    with torch.no_grad():
        for key, tensor in state.items():
            origin = key
            for prefix, replacement in rename.items():
                if key.startswith(prefix):
                    origin = replacement + key[len(prefix) :]
            if origin in source and source[origin].shape == tensor.shape:
                tensor.copy_(source[origin])
    return student


class FrameVelocity(nn.Module):
    """forward(case tensors) -> v of the generated frame (B, 1, c, h, w): what modelopt wraps."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model

    def forward(self, context, x, t, condition, anchor, context_level: float) -> torch.Tensor:
        # x (B, 1, c, h, w) at levels t (B,), behind context (B, j, c, h, w)
        case = RolloutCase(context, x, condition, anchor, context_level)
        return frame_velocity(self.model, case, x, t)


class FeatureLoss(_Loss):
    """Block-output MSE, normalised by the teacher feature's mean square; the projection of the
    student's features (Identity at equal width) is held by the objective (see the module docstring)."""

    def __init__(self, projection: nn.Module):
        super().__init__()
        self._projection = [projection]  # a list: not a submodule of this loss

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        # (B, T, N, D_s) -> (B, T, N, D_t)
        projected = self._projection[0](student).float()
        teacher = teacher.float()
        return (projected - teacher).pow(2).mean() / teacher.pow(2).mean().clamp_min(1e-8)


class VelocityLoss(_Loss):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (student.float() - teacher.float()).pow(2).mean()


class WeightedSum(DistillationLossBalancer):
    """Fixed weights: kd losses in criterion order, then the student (task) loss."""

    def __init__(self, weights: list[float], task_weight: float):
        super().__init__()
        self.weights, self.task_weight = weights, task_weight

    def forward(self, loss: dict[str, torch.Tensor]) -> torch.Tensor:
        kd = [value for key, value in loss.items() if key != STUDENT_LOSS_KEY]
        total = sum(weight * value for weight, value in zip(self.weights, kd, strict=True))
        if STUDENT_LOSS_KEY in loss:
            total = total + self.task_weight * loss[STUDENT_LOSS_KEY]
        return total


class StudentObjective(nn.Module):
    """`forward(batch) -> (loss, logs)`; `kd.model` is the student (the package), the teacher frozen."""

    def __init__(self, student: WorldModel, teacher: WorldModel, config: StudentConfig):
        import modelopt.torch.distill as mtd

        super().__init__()
        self.config = config
        student.tokenizer.requires_grad_(False)
        teacher.requires_grad_(False)
        teacher.eval()
        width_s, width_t = student.model_cfg.width, teacher.model_cfg.width
        pairs = block_pairs(student.model_cfg.depth, teacher.model_cfg.depth)
        self.projections = nn.ModuleList(
            nn.Linear(width_s, width_t, bias=False) if width_s != width_t else nn.Identity() for _ in pairs
        )
        criterion: dict[tuple[str, str], _Loss] = {("", ""): VelocityLoss()}
        weights = [config.output_weight]
        for (i, j), projection in zip(pairs, self.projections):
            criterion[(f"model.dit.blocks.{i}", f"model.dit.blocks.{j}")] = FeatureLoss(projection)
            weights.append(config.feature_weight / len(pairs))
        self.kd = mtd.convert(
            FrameVelocity(student),
            mode=[
                (
                    "kd_loss",
                    {
                        "teacher_model": FrameVelocity(teacher),
                        "criterion": criterion,
                        "loss_balancer": WeightedSum(weights, config.task_weight),
                        # The teacher stays in the objective's state dict, as in pruning recovery:
                        # DeepSpeed reloads a checkpoint through the objective, not through `kd`.
                        "expose_minimal_state_dict": False,
                    },
                )
            ],
        )

    @property
    def student(self) -> WorldModel:
        return self.kd.model

    def train(self, mode: bool = True) -> StudentObjective:
        super().train(mode)
        self.kd.teacher_model.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student = self.student
        case = rollout_case(student, batch, student.sampler_cfg.context_noise)
        b = case.frame.shape[0]
        t = sample_noise_levels(b, 1, student.objective_cfg, case.frame.device)[:, 0]  # (B,)
        noise = torch.randn_like(case.frame)
        expand = t[:, None, None, None, None].to(case.frame.dtype)
        x_t = (1 - expand) * case.frame + expand * noise
        velocity = self.kd(case.context, x_t, t, case.condition, case.anchor, case.context_level)
        task = (velocity.float() - (noise - case.frame).float()).pow(2).mean()
        losses = self.kd.compute_kd_loss(student_loss=task, skip_balancer=True)
        loss = self.kd.loss_balancer(losses)
        kd = [value for key, value in losses.items() if key != STUDENT_LOSS_KEY]  # criterion order
        logs = {
            "loss": loss.detach(),
            "task_loss": task.detach(),
            "output_loss": kd[0].detach(),
            "feature_loss": (sum(kd[1:]) / len(kd[1:])).detach(),
        }
        return loss, logs
