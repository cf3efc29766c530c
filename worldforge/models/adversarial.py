"""DMD2's adversarial term (`distill.dmd.adversarial_weight`): a small patch critic that tells a
true frame from a generated one, each shown with the previous frames it follows, and the term that
pushes the generator toward frames it cannot tell apart.

A regression's answer is the mean of what could be there, and a distribution-matching student
learns the teacher's samples, soft edges and all; the critic judges against real frames, so its
term is low only for frames that look like frames of this world after those frames (DMD2 and ADD
add the same kind of term to a diffusion student; this one is a small patch critic on the frames
themselves).

Both players train in one optimizer step (one engine, as every task of the trainer): the critic's
hinge loss sees the generated frames detached, and the generator's term is computed with the
critic's parameters frozen (`requires_grad` off for that call), so each loss moves only its own
player.

Tried on the teacher's own training and not kept (2026-12-06: its x0 guesses at noise levels <= 0.6
against the true frames): after 800 of 2000 steps the critic still gave both the same mean
logit to three decimals. Guesses from a truly noised frame at those levels are close to the truth;
the softness a rollout shows comes from the sampler's chain, which only a generated frame shows.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class FrameCritic(nn.Module):
    """A patch critic: a latent frame (B, c, h, w) and its anchor (B, k c, h, w), the previous
    frames it follows, -> logits (B, 1, h / 4, w / 4), one per patch of about 14 x 14 cells
    (high: looks like a true frame after that anchor)."""

    def __init__(self, channels: int, anchor_channels: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels + anchor_channels, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # (h/2, w/2)
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1),  # (h/4, w/4)
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    @classmethod
    def for_model(cls, model) -> FrameCritic:
        """A critic for a `WorldModel`'s latent frames and anchors."""
        channels = model.tokenizer_cfg.latent_dim
        return cls(channels, channels * model.model_cfg.anchor_frames)

    def forward(self, frame: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([frame, anchor.to(frame.dtype)], dim=1))


@contextlib.contextmanager
def frozen(module: nn.Module):
    """`module`'s parameters out of autograd for the `with`: a loss computed inside reaches the
    inputs, not the parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def noised(frames: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`frames` (N, ...) at flow-matching noise levels `levels` (N,): (1 - s) x + s eps."""
    shape = (-1,) + (1,) * (frames.dim() - 1)
    return (1 - levels.view(shape)) * frames + levels.view(shape) * noise


def adversarial_losses(
    critic: FrameCritic,
    generated: torch.Tensor,
    real: torch.Tensor,
    anchor: torch.Tensor,
    noise_level: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's hinge loss and the generator's adversarial term.

    generated: (N, c, h, w) the generator's frames (with gradient); real: (N, c, h, w) the true
    frames; anchor: (N, k c, h, w) the previous frames each follows (shared by both).
    noise_level > 0: each pair (true and generated frame i) is shown noised to one level drawn
    from U(0, noise_level) with one noise (DMD2's critic judges noised samples): noise hides
    pixel-scale grain, so the critic has to judge shapes and colours, and grain cannot satisfy it.
    Returns (critic loss: gradient to the critic only, generator term: gradient to `generated`
    only, logs: the critic's mean logit on true and on generated frames)."""
    context = anchor.detach()
    if noise_level > 0:
        levels = noise_level * torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
        noise = torch.randn_like(real)
        real, generated = noised(real, levels, noise), noised(generated, levels, noise)
    real_logits = critic(real.detach(), context)
    fake_logits = critic(generated.detach(), context)
    critic_loss = F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()
    with frozen(critic):
        term = -critic(generated, context).float().mean()
    logs = {
        "critic_real": real_logits.detach().float().mean(),
        "critic_fake": fake_logits.detach().float().mean(),
    }
    return critic_loss, term, logs
