"""DMD2's adversarial term (`distill.dmd.adversarial_weight`): each player's loss moves only that player,
a critic learns to tell crisp frames from soft ones, and its term then sharpens a soft frame."""

from __future__ import annotations

import torch

from worldforge.models.adversarial import FrameCritic, adversarial_losses
from worldforge.models.config import ObjectiveConfig
from worldforge.models.objective import blur_frames


def discs(count: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(count, 3, size, size) frames in [-1, 1]: one hard-edged disc of a random colour and place
    on a dark ground."""
    generator = torch.Generator().manual_seed(seed)
    centre = torch.rand(count, 2, generator=generator) * (size - 6) + 3
    colour = torch.rand(count, 3, generator=generator) * 1.5 - 0.5
    grid = torch.arange(size, dtype=torch.float32)
    distance = (grid[None, :, None] - centre[:, 0, None, None]) ** 2 + (
        grid[None, None, :] - centre[:, 1, None, None]
    ) ** 2
    inside = (distance <= 2.5**2).float()[:, None]  # (count, 1, size, size)
    return inside * colour[:, :, None, None] + (1 - inside) * -1.0


def soften(frames: torch.Tensor, width: float) -> torch.Tensor:
    config = ObjectiveConfig(anchor_blur=width, anchor_blur_prob=1.0)
    # a fixed width: the blur draws widths in 0 .. anchor_blur, so ask for it per frame until all are wide
    blurred = frames
    for _ in range(3):
        blurred = blur_frames(blurred[:, None], config, torch.Generator().manual_seed(1))[:, 0]
    return blurred


def laplacian_energy(frames: torch.Tensor) -> float:
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(3, 1, 3, 3)
    return float(torch.nn.functional.conv2d(frames, kernel, groups=3).pow(2).mean())


def test_each_players_loss_reaches_only_that_player():
    torch.manual_seed(0)
    critic = FrameCritic(3, 3)
    clean = discs(4)
    generated = soften(discs(4), 1.0).requires_grad_(True)
    anchor = discs(4, seed=1)
    critic_loss, term, _ = adversarial_losses(critic, generated, clean, anchor)
    critic_loss.backward(retain_graph=True)
    assert generated.grad is None  # the critic's hinge loss sees the generated frames detached
    # every weight learns (the last bias need not: within the hinge's margin its pulls cancel)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters() if p.dim() > 1)
    critic.zero_grad(set_to_none=True)
    term.backward()
    assert generated.grad is not None and generated.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())  # frozen for the generator's term ...
    assert all(p.requires_grad for p in critic.parameters())  # ... and only for it


def test_a_trained_critic_tells_crisp_discs_from_soft_ones_and_its_term_sharpens_a_soft_frame():
    torch.manual_seed(0)
    critic = FrameCritic(3, 3, width=16)
    optimizer = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.5, 0.99))
    for step in range(150):
        crisp = discs(32, seed=step)
        soft = soften(discs(32, seed=1000 + step), 1.0)
        anchor = discs(32, seed=2000 + step)
        loss, _, _ = adversarial_losses(critic, soft, crisp, anchor)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    crisp, soft, anchor = discs(64, seed=-1 % 10_000), soften(discs(64, seed=77), 1.0), discs(64, seed=78)
    with torch.no_grad():
        assert float(critic(crisp, anchor).mean()) > float(critic(soft, anchor).mean()) + 0.3
    # The generator's term alone, descended on the soft frames themselves, draws their edges back.
    frames = soft.clone().requires_grad_(True)
    before = laplacian_energy(soft)
    step_opt = torch.optim.Adam([frames], lr=1e-2)
    for _ in range(40):
        _, term, _ = adversarial_losses(critic, frames, crisp, anchor)
        step_opt.zero_grad()
        term.backward()
        step_opt.step()
    assert laplacian_energy(frames.detach()) > 1.5 * before


def test_a_noised_critic_sees_each_true_and_generated_pair_at_one_level_with_one_noise():
    """`noise_level` (distill.dmd.adversarial_noise): each pair is noised alike, so a generated
    frame equal to its true frame gets the same logits; the critic sees noised frames, not the
    clean ones; a tiny level is the clean critic; and the generator's term still reaches its frames."""
    torch.manual_seed(0)
    critic = FrameCritic(3, 3)
    frames, anchor = discs(8), discs(8, seed=1)
    generated = frames.clone().requires_grad_(True)
    _, term, logs = adversarial_losses(critic, generated, frames, anchor, noise_level=0.5)
    assert torch.allclose(logs["critic_real"], logs["critic_fake"], atol=1e-6)
    term.backward()
    assert generated.grad is not None and generated.grad.abs().sum() > 0
    _, _, clean = adversarial_losses(critic, frames, frames, anchor)
    assert abs(float(logs["critic_real"] - clean["critic_real"])) > 1e-3
    _, _, tiny = adversarial_losses(critic, frames, frames, anchor, noise_level=1e-6)
    assert torch.allclose(tiny["critic_real"], clean["critic_real"], atol=1e-4)
    # different frames at one shared noise: the critic still tells them apart (the noise is not all it sees)
    _, _, apart = adversarial_losses(critic, soften(frames, 1.0), frames, anchor, noise_level=0.3)
    assert abs(float(apart["critic_real"] - apart["critic_fake"])) > 1e-4
