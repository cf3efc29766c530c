"""Training objective and quality metric of the tokenizer: reconstruction + KL, and PSNR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldforge.models.config import ModelConfigError


def tokenizer_loss(
    tokenizer: nn.Module, frames: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction (L1 or MSE, per `tokenizer.config`) + kl_weight * KL(q(z|x) || N(0, I)).

    frames: (B, T, C, H, W) in [-1, 1]. Samples z from the posterior (reparameterised).
    Returns the scalar loss and detached logs: loss, reconstruction, kl, psnr (dB).
    """
    config = tokenizer.config
    if config.kind != "vae":
        raise ModelConfigError(
            "tokenizer_loss: the patch tokenizer has no weights to train (tokenizer.kind=patch)"
        )
    mean, logvar = tokenizer.posterior(frames)  # (B, T', c, h, w) each
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    reconstruction = tokenizer.decode(z * config.latent_scale)  # (B, T, C, H, W)
    if config.reconstruction_loss == "l1":
        recon = F.l1_loss(reconstruction, frames)
    else:
        recon = F.mse_loss(reconstruction, frames)
    # KL per latent element, averaged: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = recon + config.kl_weight * kl
    logs = {
        "loss": loss.detach(),
        "reconstruction": recon.detach(),
        "kl": kl.detach(),
        "psnr": psnr(reconstruction.detach(), frames),
    }
    return loss, logs


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2), averaged over the batch: a 0-dim tensor.

    prediction, target: (B, ...) ; the MSE is taken per sample, then the dB values averaged."""
    prediction = prediction.clamp(-1.0, 1.0)
    mse = (prediction - target).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return (10.0 * torch.log10(4.0 / mse)).mean()


@torch.no_grad()
def reconstruction_psnr(tokenizer: nn.Module, frames: torch.Tensor, chunk: int | None = None) -> float:
    """PSNR (dB) of decode(encode(frames)) against frames (B, T, C, H, W) in [-1, 1]."""
    reconstruction = tokenizer.decode(tokenizer.encode(frames), chunk=chunk)
    return float(psnr(reconstruction, frames))
