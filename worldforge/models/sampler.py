"""Samplers for one frame: from t = 1 (noise) to t = 0 (clean) along the velocity field v(x, t).

`euler` and `heun` integrate the ODE dx/dt = v. `ancestral` is stochastic: each step takes the
clean frame the network predicts, x0 = x - t v, and noises it afresh to the next level,
x' = (1 - t') x0 + t' eps with new eps, as DDPM's ancestral sampling does. Fresh noise keeps every
step's input at the noise statistics training saw, so a few-step sample commits to one sharp
frame instead of averaging the possible ones (the ODE's few-step failure mode).

The sampler only sees a velocity function, so distillation can swap the network behind it (or
use fewer steps) without touching rollout code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]  # (x, t) -> v, x and v of the same shape


def timesteps(steps: int, shift: float = 1.0) -> list[float]:
    """steps + 1 noise levels from 1 down to 0. The shift s maps t -> s t / (1 + (s - 1) t): s > 1
    spends more steps at high noise, where few-step sampling makes its largest errors."""
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    shifted = shift * grid / (1 + (shift - 1) * grid)
    return shifted.tolist()


def advance(
    x: torch.Tensor,
    v: torch.Tensor,
    t: float,
    t_next: float,
    fresh: bool = False,
    generator=None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step from level t to t_next, given the velocity v at (x, t): Euler's, or with `fresh`
    the ancestral step's (the predicted clean frame x - t v, noised afresh to t_next with `noise`,
    or noise drawn from `generator` when None; at t_next = 0 both give that clean frame)."""
    if not fresh:
        return x + (t_next - t) * v
    x0 = x - t * v
    if t_next <= 0:
        return x0
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (1 - t_next) * x0 + t_next * noise


def euler(
    velocity: VelocityFn, noise: torch.Tensor, steps: int, shift: float = 1.0, generator=None
) -> torch.Tensor:
    """`steps` velocity evaluations."""
    x = noise
    levels = timesteps(steps, shift)
    for t, t_next in itertools.pairwise(levels):
        x = advance(x, velocity(x, t), t, t_next)
    return x


def heun(
    velocity: VelocityFn, noise: torch.Tensor, steps: int, shift: float = 1.0, generator=None
) -> torch.Tensor:
    """Heun's second-order method; the last step (to t = 0) is Euler: 2 steps - 1 evaluations."""
    x = noise
    levels = timesteps(steps, shift)
    for t, t_next in itertools.pairwise(levels):
        v = velocity(x, t)
        guess = x + (t_next - t) * v
        if t_next > 0:
            guess = x + (t_next - t) * 0.5 * (v + velocity(guess, t_next))
        x = guess
    return x


def ancestral(
    velocity: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float = 1.0,
    generator=None,
    renoise: torch.Tensor | None = None,
) -> torch.Tensor:
    """`steps` velocity evaluations; each predicts x0 and re-noises it to the next level with fresh
    noise (drawn from `generator`), or with `renoise` at every step when given (the sample is then a
    function of the noise alone, as an ODE solver's is). One step is the same as Euler's: the
    predicted x0."""
    x = noise
    levels = timesteps(steps, shift)
    for t, t_next in itertools.pairwise(levels):
        x = advance(x, velocity(x, t), t, t_next, fresh=True, generator=generator, noise=renoise)
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"euler": euler, "heun": heun, "ancestral": ancestral}


def evaluations(solver: str, steps: int) -> int:
    """Velocity evaluations per sampled frame."""
    return 2 * steps - 1 if solver == "heun" else steps


def sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float = 1.0,
    solver: str = "euler",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """generator: the fresh noise of the `ancestral` solver (the ODE solvers draw none)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}")
    return SOLVERS[solver](velocity, noise, steps, shift, generator)
