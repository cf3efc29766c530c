"""Tokenizers: causal in time, chunked decode exact, VAE objective trains, PSNR is right."""

import pytest
import torch

from worldforge.models.config import ModelConfigError, TokenizerConfig
from worldforge.models.tokenizer_objective import psnr, reconstruction_psnr, tokenizer_loss
from worldforge.models.tokenizers import build_tokenizer


def small_vae(spatial=4, temporal=1, **fields):
    torch.manual_seed(0)
    config = TokenizerConfig(
        kind="vae",
        frame_size=(32, 32),
        spatial_compression=spatial,
        temporal_compression=temporal,
        base_channels=8,
        latent_channels=4,
        **fields,
    )
    return build_tokenizer(config)


def test_patch_tokenizer_round_trip_is_exact(make_clips):
    tokenizer = build_tokenizer(TokenizerConfig(frame_size=(32, 32), patch_size=8, latent_scale=2.0))
    frames, _ = make_clips(2, 3)
    latents = tokenizer.encode(frames)
    assert latents.shape == (2, 3, 3 * 8 * 8, 4, 4)
    torch.testing.assert_close(tokenizer.decode(latents), frames, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spatial, temporal", [(4, 1), (8, 1), (4, 2), (8, 4)])
def test_vae_shapes(spatial, temporal):
    vae = small_vae(spatial, temporal)
    frames = torch.rand(1, 1 + 2 * temporal, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(frames)
        assert latents.shape == (1, 3, 4, 32 // spatial, 32 // spatial)
        assert vae.decode(latents).shape == frames.shape


@pytest.mark.parametrize("temporal", [1, 2])
def test_encoding_the_first_frames_equals_the_start_of_encoding_all(temporal):
    vae = small_vae(4, temporal)
    frames = torch.rand(1, 1 + 4 * temporal, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        everything = vae.encode(frames)
        for latent_frames in (1, 2, 4):
            prefix = vae.encode(frames[:, : 1 + (latent_frames - 1) * temporal])
            torch.testing.assert_close(prefix, everything[:, :latent_frames], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temporal", [1, 2])
def test_decoding_is_causal_and_chunked_decode_equals_full_decode(temporal):
    vae = small_vae(4, temporal)
    latents = torch.randn(1, 7, 4, 8, 8)
    with torch.no_grad():
        full = vae.decode(latents)
        assert full.shape[1] == 1 + 6 * temporal
        torch.testing.assert_close(
            vae.decode(latents[:, :3]), full[:, : 1 + 2 * temporal], rtol=1e-5, atol=1e-5
        )
        for chunk in (1, 2, 3):
            torch.testing.assert_close(vae.decode(latents, chunk=chunk), full, rtol=1e-5, atol=1e-5)


def test_frame_counts_that_do_not_fit_the_temporal_compression_are_named():
    with pytest.raises(ModelConfigError, match="1 \\+ k \\* 2"):
        small_vae(4, 2).encode(torch.zeros(1, 4, 3, 32, 32))


def test_vae_objective_lowers_loss_and_raises_psnr(make_clips):
    vae = small_vae(4, 1, kl_weight=1e-4)
    frames, _ = make_clips(2, 3)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    before = reconstruction_psnr(vae, frames)
    losses = []
    for _ in range(40):
        loss, logs = tokenizer_loss(vae, frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(logs["loss"]))
        assert set(logs) == {"loss", "reconstruction", "kl", "psnr"}
    assert losses[-1] < 0.5 * losses[0]
    assert reconstruction_psnr(vae, frames) > before + 5


def test_patch_tokenizer_has_nothing_to_train(make_clips):
    with pytest.raises(ModelConfigError, match="no weights"):
        tokenizer_loss(build_tokenizer(TokenizerConfig()), torch.zeros(1, 1, 3, 64, 64))


def test_psnr_of_frames_in_minus_one_one():
    target = torch.zeros(2, 3, 3, 8, 8)
    assert float(psnr(target + 0.2, target)) == pytest.approx(20.0, abs=1e-4)  # 10 log10(4 / 0.04)
    assert float(psnr(target, target)) == pytest.approx(
        100.0 + 10 * torch.log10(torch.tensor(4.0)).item(), abs=1e-3
    )
