"""Distribution-matching distillation (DMD: Yin et al., 2024; DMD2: Yin et al., 2024): a few-step
student whose samples' distribution matches the teacher's, rather than a student that retraces
the teacher's trajectories (progressive, consistency).

Three networks. The frozen teacher is the "real" score: its x0 prediction at noise level t
points where data lies. A "fake" score network, initialised from the teacher, is trained online
with the ordinary flow-matching loss on the student's samples, so its x0 prediction points where
the student's samples lie. The student G (initialised from the teacher too) generates a frame in
`steps` steps from noise, x0 = G(eps); the sample is re-noised, x_t = (1 - t) x0 + t eps',
and both scores judge it. The gradient of KL(p_student || p_teacher) with respect to x0 is, up to
a positive weight, the difference of the two denoised guesses:

    grad = (fake_x0(x_t, t) - real_x0(x_t, t)) / mean|x0 - real_x0(x_t, t)|
    loss = 0.5 * |x0 - sg(x0 - grad)|^2          (d loss / d x0 = grad / size)

so a descent step moves x0 away from where the student's distribution is and toward where the
teacher's is; the normaliser (DMD's) makes the step size independent of the noise level. When the
student's samples already follow the teacher, the fake score equals the real one and the loss and
its gradient are exactly zero. DMD's regression term (the student's sample against the teacher's
own multi-step sample from the same noise) is optional (`distill.dmd.regression_weight`; DMD2
drops it, 0 by default). DMD2's adversarial term is optional too (`distill.dmd.adversarial_weight`):
a patch critic (`models/adversarial.py`), a submodule of the student's objective trained in the same
step, tells the true frame j from the student's frame j, each shown with the frames before it, so
the student is pulled toward real frames where the teacher's own samples fall short of them.

The student and the fake score are trained in turn on the shared `Trainer`: the fake score is
the task's `Critic` (its own DeepSpeed engine and optimizer, `fake_updates` optimizer steps per
student step, on the same micro-batch, DMD2's two time-scale rule), the student is the task's
objective. Each calls the other's network outside that network's engine, with its parameters
gathered (`gathered`: whole under ZeRO-3, a no-op below), so every ZeRO stage works. Like the other step-distillation objectives, each micro-batch is a rollout step: a
clip's first j latent frames are the context, frame j is generated (`steps.rollout_case`); with
`distill.dmd.rollout_frames` u > 0 the last u of those context frames are the student's own
KV-cached rollout (no gradient), so the student learns on the inputs it meets at inference and the
fake score tracks its frames after its own frames ("self forcing"). Only
the student's last step carries a gradient (the earlier ones run without one, as in DMD2's
and Self-Forcing's multi-step generators), so memory does not grow with `steps`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from worldforge.compression.distill.config import DMDConfig
from worldforge.compression.distill.steps import RolloutCase, _expand, frame_velocity, rollout_case
from worldforge.models.adversarial import FrameCritic, adversarial_losses
from worldforge.models.objective import sample_noise_levels
from worldforge.models.sampler import advance, ancestral, sample, timesteps
from worldforge.models.world_model import WorldModel
from worldforge.training.tasks import FrozenTeacher

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t (B,)) -> x0 guess


def dmd_loss(
    x0: torch.Tensor, real: Denoiser, fake: Denoiser, t: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DMD loss of generated samples `x0` (B, ...), with gradient only through `x0`: re-noised
    to levels `t` (B,) with `noise`, judged by the `real` and `fake` denoisers (x0 guesses, called
    without gradient). Returns the loss and the (normalised) gradient it applies to x0."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    x_t = (1 - t.view(shape)) * x0.detach() + t.view(shape) * noise
    with torch.no_grad():
        real_x0, fake_x0 = real(x_t, t), fake(x_t, t)
        dims = tuple(range(1, x0.dim()))
        weight = (x0.detach() - real_x0).abs().mean(dim=dims, keepdim=True).clamp_min(1e-6)
        grad = (fake_x0 - real_x0) / weight
    loss = 0.5 * (x0.float() - (x0 - grad).detach().float()).pow(2).mean()
    return loss, grad


def gathered(model: nn.Module):
    """Whole parameters of a network that another engine owns, for a call outside that engine's
    forward: under ZeRO-3 they are partitioned across ranks and gathered here for the duration of
    the `with` (DeepSpeed's `GatheredParameters`); below ZeRO-3 this does nothing."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def _denoiser(model: WorldModel, case: RolloutCase, guided: bool = False) -> Denoiser:
    """The x0 guess of the generated frame under `model`, behind the case's context (`guided`:
    `frame_velocity`'s)."""

    def x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x_t - t[:, None, None, None, None] * frame_velocity(model, case, x_t, t, guided)

    return x0


def generate(model: WorldModel, case: RolloutCase, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The student's frame: `steps` steps from `noise` on its sampler's grid, as its rollouts take
    them: Euler, or with `sampler.solver` ancestral each step's predicted x0 noised afresh to the
    next level (DMD2's multi-step generator); the last step with gradient. Returns x0 (B, 1, c, h, w)."""
    grid = timesteps(steps, model.sampler_cfg.shift)
    fresh = model.sampler_cfg.solver == "ancestral"
    x = noise
    with torch.no_grad():
        for t, t_next in itertools.pairwise(grid[:-1]):
            x = advance(x, frame_velocity(model, case, x, x.new_full((x.shape[0],), t)), t, t_next, fresh)
    last = x.new_full((x.shape[0],), grid[-2])
    return x - _expand(last) * frame_velocity(model, case, x, last)


class DMDObjective(FrozenTeacher):
    """The student's update: the DMD loss of its frames under the teacher (real) and the fake
    score network (trained by `FakeScoreObjective`, the trainer's critic: held here without being
    a submodule, so that each network belongs to one engine), plus the optional regression term."""

    def __init__(
        self,
        student: WorldModel,
        teacher: WorldModel,
        fake: WorldModel,
        config: DMDConfig,
        teacher_steps: int,
    ):
        super().__init__(student, teacher)
        self.config, self.teacher_steps = config, teacher_steps
        self.steps = student.sampler_cfg.steps
        object.__setattr__(self, "fake", fake)  # not a submodule: the critic's engine owns it
        # DMD2's adversarial critic: a submodule, trained in the student's step (not in its package)
        self.critic = FrameCritic.for_model(student) if config.adversarial_weight > 0 else None

    def param_groups(self, lr: float) -> list[dict]:
        """The trainer's optimizer groups: the student's trainable weights at `lr`, the critic's at
        `lr * adversarial_lr_scale` (a critic that keeps ahead of the student it judges)."""
        critic = [p for p in self.critic.parameters() if p.requires_grad] if self.critic is not None else []
        ids = {id(p) for p in critic}
        groups = [{"params": [p for p in self.parameters() if p.requires_grad and id(p) not in ids]}]
        if critic:
            groups.append({"params": critic, "lr": lr * self.config.adversarial_lr_scale})
        return groups

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        case = rollout_case(
            self.model, batch, self.model.sampler_cfg.context_noise, self.config.rollout_frames
        )
        b = case.frame.shape[0]
        noise = torch.randn_like(case.frame)
        x0 = generate(self.model, case, noise, self.steps)
        low, high = self.config.min_level, self.config.max_level
        t = low + (high - low) * torch.rand(b, device=x0.device, dtype=x0.dtype)
        loss, grad = dmd_loss(
            x0, _denoiser(self.teacher, case, guided=True), _denoiser(self.fake, case), t, torch.randn_like(x0)
        )
        logs = {"dmd_loss": loss.detach(), "dmd_grad": grad.abs().mean()}
        if self.critic is not None:
            # frame j, generated and true, each after frame j's anchor: (B, c, h, w), (B, k c, h, w)
            critic_loss, term, critic_logs = adversarial_losses(
                self.critic, x0[:, 0], case.frame[:, 0], case.anchor[:, -1], self.config.adversarial_noise
            )
            loss = loss + critic_loss + self.config.adversarial_weight * term
            logs |= {"critic_loss": critic_loss.detach(), "adversarial_loss": term.detach(), **critic_logs}
        if self.config.regression_weight > 0:
            with torch.no_grad():
                target = self._teacher_sample(case, noise)
            regression = (x0.float() - target.float()).pow(2).mean()
            loss = loss + self.config.regression_weight * regression
            logs["regression_loss"] = regression.detach()
        return loss, {"loss": loss.detach(), **logs}

    def _teacher_sample(self, case: RolloutCase, noise: torch.Tensor) -> torch.Tensor:
        """The teacher's `teacher_steps`-step sample from `noise` with its own solver: DMD's
        regression target. DMD pairs each noise with one teacher sample; an ancestral teacher's
        fresh noise would give a noise many samples, and the regression would learn their mean (a
        blur), so its chain re-noises with the starting noise at every step instead."""

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return frame_velocity(self.teacher, case, x, x.new_full((x.shape[0],), t), guided=True)

        sampler = self.teacher.sampler_cfg
        if sampler.solver == "ancestral":
            return ancestral(velocity, noise, self.teacher_steps, sampler.shift, renoise=noise)
        return sample(velocity, noise, self.teacher_steps, sampler.shift, sampler.solver)


class FakeScoreObjective(nn.Module):
    """The fake score's update: flow matching on the student's frames (generated here without
    gradient, from the same micro-batch's context), so that it tracks the student's distribution;
    noise levels and loss (velocity or x0) as the teacher's objective config trained it.
    The student is held without being a submodule (the objective's engine owns it)."""

    def __init__(self, fake: WorldModel, student: WorldModel, config: DMDConfig):
        super().__init__()
        self.model = fake
        fake.tokenizer.requires_grad_(False)
        fake.dit.requires_grad_(True)
        self.config = config
        object.__setattr__(self, "student", student)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad(), gathered(self.student):
            case = rollout_case(
                self.student, batch, self.student.sampler_cfg.context_noise, self.config.rollout_frames
            )
            x0 = generate(self.student, case, torch.randn_like(case.frame), self.student.sampler_cfg.steps)
        objective = self.model.objective_cfg
        t = sample_noise_levels(x0.shape[0], 1, objective, x0.device)[:, 0].to(x0.dtype)
        noise = torch.randn_like(x0)
        x_t = (1 - _expand(t)) * x0 + _expand(t) * noise
        velocity = frame_velocity(self.model, case, x_t, t)
        error = velocity.float() - (noise - x0).float()
        if objective.loss == "x0":  # the fake score learns as the teacher learned (x0 = x_t - t v)
            error = error * _expand(t).float()
        loss = error.pow(2).mean()
        return loss, {"loss": loss.detach()}
