"""Step distillation objectives: a student that takes fewer solver steps than its teacher.

Both are trained on the case a rollout meets: a clip's first j latent frames are context (clean,
or at `sampler.context_noise` as the rollout commits them), frame j is generated from noise, with
the actions that lead to it; later frames are dropped (block-causal attention never lets them
reach frame j). j is drawn per micro-batch in [1, T'), so every context length of the clips is
seen. Only frame j's velocity is trained. In our rectified flow, x_t = (1 - t) x0 + t eps and an
Euler step from t to s is x_s = x_t + (s - t) v(x_t, t); `model.velocity` turns the network output
into v (x0 prediction, `residual` anchor on the previous clean frame), so both objectives work in
velocity terms whatever the objective config.

Progressive distillation (Salimans & Ho, 2022). One round halves the steps: on the student grid
`timesteps(N, shift)`, one student step t -> s covers exactly two teacher steps t -> u -> s
(`timesteps(N, shift)` is every other level of `timesteps(2N, shift)`). With x_t drawn from the
forward process on a real frame, the target is the velocity that lands where the teacher lands:

    x_u = x_t + (u - t) v_T(x_t, t);  x_s = x_u + (s - u) v_T(x_u, u);  v* = (x_s - x_t) / (s - t)
    loss = |v_S(x_t, t) - v*|^2

Consistency distillation, multistep (Song et al., 2023; Heek et al., 2024). The student's N steps
split [0, 1] into N segments on `timesteps(N, shift)`; within a segment [b, top] the student's
Euler jump to the boundary, f(x_t, t) = x_t + (b - t) v_S(x_t, t), must give the same point for
every x_t on one teacher trajectory. For adjacent teacher levels t > t' (one teacher Euler step,
x_t' = x_t + (t' - t) v_T(x_t, t)):

    loss = |f(x_t, t) - sg[f(x_t', t')]|^2 / (t - b)^2     (f(x_b, b) = x_b: the boundary condition)

sg is stop-gradient on the student's current weights (no EMA target, as in improved consistency
training, Song & Dhariwal 2023, which found the EMA target unnecessary); the division puts the
loss in velocity units, comparable with progressive's. N = 1 is classic consistency distillation
(f maps any point to x0). Sampling is the rollout's own Euler sampler with `steps` = N: each step
is a jump to the next segment boundary that re-noises deterministically with the predicted noise
(DDIM), the multistep consistency sampler of Heek et al.; nothing in rollout code changes.

Both regress the student onto the teacher's trajectories; `dmd.py` instead matches the student's
distribution to the teacher's (a second, "fake score" network trained alongside it as the
trainer's critic), which keeps few-step samples sharp where a trajectory-regressing student
averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldforge.models.sampler import timesteps
from worldforge.models.streaming import LatentStream
from worldforge.models.world_model import WorldModel
from worldforge.training.tasks import FrozenTeacher


@dataclass
class RolloutCase:
    """One micro-batch as a rollout step sees it: context frames and the frame to generate."""

    context: torch.Tensor  # (B, j, c, h, w): as the DiT sees committed context
    frame: torch.Tensor  # (B, 1, c, h, w): the clean frame j (x0)
    condition: torch.Tensor  # (B, j + 1, r[, A + 1]): action conditioning of frames 0..j
    anchor: torch.Tensor  # (B, j + 1, c, h, w): each frame's previous clean frame (`residual`)
    context_level: float


def rollout_case(
    model: WorldModel, batch: dict[str, torch.Tensor], context_level: float, rollout_frames: int = 0
) -> RolloutCase:
    """Cut a batch of clips (frames (B, T, C, H, W), actions (B, T[, A])) at a random frame j.

    rollout_frames u > 0 ("self forcing"): the last u context frames are the model's own rollout
    (KV-cached, without gradient, with its sampler) from the real frames before them, as they are
    at inference; u = 0 is the teacher-forced case, unchanged."""
    with torch.no_grad():
        clean = model.tokenizer.encode(batch["frames"])  # (B, T', c, h, w)
    frames = clean.shape[1]
    if frames < 2 + rollout_frames:
        raise ValueError(
            f"clips of {frames} latent frames: distillation needs context, "
            f"{rollout_frames} generated frames (distill.dmd.rollout_frames) and a frame after them "
            "(raise data.clip_frames)"
        )
    j = int(torch.randint(1 + rollout_frames, frames, ()))  # global RNG: the trainer seeds it per micro-batch
    condition = model.action_condition(batch["actions"], frames)[:, : j + 1]
    clean = clean[:, : j + 1]
    if rollout_frames:
        real = j - rollout_frames
        with torch.no_grad():
            stream = LatentStream(model, clean[:, :real], condition[:, :real])
            generated = [stream.next(condition[:, k : k + 1]) for k in range(real, j)]
        clean = torch.cat([clean[:, :real], *generated, clean[:, j:]], dim=1)
    context = clean[:, :j]
    if context_level > 0:
        context = (1 - context_level) * context + context_level * torch.randn_like(context)
    return RolloutCase(context, clean[:, j:], condition, model.anchors(clean), context_level)


def frame_velocity(
    model: WorldModel, case: RolloutCase, x: torch.Tensor, t: torch.Tensor, guided: bool = False
) -> torch.Tensor:
    """v(x, t) of the generated frame: x (B, 1, c, h, w) at levels t (B,), behind the context.
    `guided`: under the model's `sampler.action_guidance`, as its own rollouts sample (a teacher's
    calls: the student learns the guided frames and samples them without guidance)."""
    levels = torch.cat([t.new_full(case.context.shape[:2], case.context_level), t[:, None]], dim=1)
    latents = torch.cat([case.context, x.to(case.context.dtype)], dim=1)  # (B, j + 1, c, h, w)
    velocity = model.guided_velocity if guided else model.velocity
    return velocity(latents, levels.to(latents.dtype), case.condition, anchor=case.anchor)[:, -1:]


def _expand(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, None, None, None]  # (B,) -> (B, 1, 1, 1, 1)


def _frame_mse(error: torch.Tensor) -> torch.Tensor:
    return error.float().pow(2).mean()


class StepObjective(FrozenTeacher):
    """A student trained against a frozen teacher of the same kind (initialised from it)."""

    def __init__(self, student: WorldModel, teacher: WorldModel):
        super().__init__(student, teacher)

    def _case(self, batch: dict[str, torch.Tensor]) -> RolloutCase:
        return rollout_case(self.model, batch, self.model.sampler_cfg.context_noise)


class ProgressiveObjective(StepObjective):
    """One round of progressive distillation: the student's `steps` Euler steps (on the grid with
    the sampler's shift) reproduce the teacher's 2 * `steps`."""

    def __init__(self, student: WorldModel, teacher: WorldModel, steps: int):
        super().__init__(student, teacher)
        shift = student.sampler_cfg.shift
        self.steps = steps
        self.register_buffer("grid", torch.tensor(timesteps(2 * steps, shift)), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        case = self._case(batch)
        b = case.frame.shape[0]
        k = torch.randint(0, self.steps, (b,), device=case.frame.device)  # the student step taken
        grid = self.grid.to(case.frame.device)
        t, u, s = grid[2 * k], grid[2 * k + 1], grid[2 * k + 2]  # (B,) each, t > u > s
        noise = torch.randn_like(case.frame)
        x_t = (1 - _expand(t)) * case.frame + _expand(t) * noise
        with torch.no_grad():
            x_u = x_t + _expand(u - t) * frame_velocity(self.teacher, case, x_t, t, guided=True)
            x_s = x_u + _expand(s - u) * frame_velocity(self.teacher, case, x_u, u, guided=True)
            target = (x_s - x_t) / _expand(s - t)
        velocity = frame_velocity(self.model, case, x_t, t)
        loss = _frame_mse(velocity - target)
        return loss, {"loss": loss.detach(), "noise_level": t.mean().detach()}


class ConsistencyObjective(StepObjective):
    """Multistep consistency distillation to `steps` segments of the teacher's `teacher_steps`
    Euler trajectory (teacher_steps a multiple of steps)."""

    def __init__(self, student: WorldModel, teacher: WorldModel, steps: int, teacher_steps: int):
        super().__init__(student, teacher)
        shift = student.sampler_cfg.shift
        self.per_segment = teacher_steps // steps
        self.teacher_steps = teacher_steps
        self.register_buffer("grid", torch.tensor(timesteps(teacher_steps, shift)), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        case = self._case(batch)
        b = case.frame.shape[0]
        n = torch.randint(0, self.teacher_steps, (b,), device=case.frame.device)  # the teacher step
        grid = self.grid.to(case.frame.device)
        boundary = grid[(n // self.per_segment + 1) * self.per_segment]  # end of n's segment
        t, t_next = grid[n], grid[n + 1]  # (B,), t > t_next >= boundary
        noise = torch.randn_like(case.frame)
        x_t = (1 - _expand(t)) * case.frame + _expand(t) * noise
        with torch.no_grad():
            x_next = x_t + _expand(t_next - t) * frame_velocity(self.teacher, case, x_t, t, guided=True)
            # f(x_b, b) = x_b: at the boundary the target is the teacher's point itself.
            jump = _expand(boundary - t_next) * frame_velocity(self.model, case, x_next, t_next)
            target = x_next + jump
        prediction = x_t + _expand(boundary - t) * frame_velocity(self.model, case, x_t, t)
        loss = _frame_mse((prediction - target) / _expand(t - boundary))
        return loss, {"loss": loss.detach(), "noise_level": t.mean().detach()}
