"""Quality metrics of generated frames: pure functions, tensors in, numbers out.

Frames are float in [-1, 1], `(B, T, C, H, W)`; per-frame metrics come back as `(B, T)`.

PSNR uses the peak-to-peak range of the frames, 2 (the same number as PSNR on uint8 frames with
peak 255): `10 log10(4 / MSE)`. A perfect prediction has MSE 0 and infinite PSNR; each frame's
PSNR is clipped to `PSNR_MAX_DB`, 58.92 dB, the PSNR of 8-bit rounding itself (uniform noise of one
uint8 step, MSE = step^2 / 12): the datasets store uint8 frames, so an error below that is finer
than the data can tell. The clip keeps means over frames finite and JSON standard, and it keeps a
mean over frames honest where the world often stands still: with a clip at 100 dB, copy-last's
exact copies of Breakout's still frames (22% of them) scored 100 dB each and lifted its mean
above a model whose total squared error was 6x smaller (50.8 against 47.0 dB; 41.7 against
46.5 with the 8-bit clip).

SSIM is the standard one (Wang et al. 2004): an 11x11 Gaussian window (sigma 1.5), constants
K1 = 0.01, K2 = 0.03 on the data range 2, computed per channel over the valid region (no padding)
and averaged over channels and positions.

Sharpness is the high-frequency energy of the generated frames relative to the true frames at the
same step: per frame, the squared discrete Laplacian (4-neighbour, over the valid region, no
padding) summed over pixels and channels; per horizon step, its mean over clips for the
prediction divided by the same for the truth. 1.0 is as sharp as the truth, < 1 blurrier, > 1
noisier. PSNR alone rewards blur: under uncertainty the MSE-optimal frame is the mean of the
possible futures, a smeared frame that scores well while showing no object where it is; the
Laplacian removes the flat regions and keeps edges and fine texture, which blur erases (ratio
towards 0) and noise adds (ratio above 1). It says nothing about where things are drawn, so it is
read next to PSNR and the position errors, never alone. A ratio of means over clips rather than a
mean of per-clip ratios, so that a clip whose true frames are nearly flat cannot dominate.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

PSNR_MAX_DB = 10.0 * math.log10(12 * 255.0**2)  # 58.92: 8-bit rounding noise
DATA_RANGE = 2.0  # frames live in [-1, 1]
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape or prediction.ndim != 5:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} "
            "must both be (B, T, C, H, W)"
        )


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame: (B, T, C, H, W) x 2 -> (B, T) float64, clipped to PSNR_MAX_DB."""
    _check_pair(prediction, target)
    error = prediction.double() - target.double()
    mse = error.pow(2).flatten(2).mean(dim=2)  # (B, T)
    value = 10.0 * torch.log10(DATA_RANGE**2 / mse)  # inf where mse == 0
    return value.clamp(max=PSNR_MAX_DB)


def _gaussian_band(length: int, size: int, sigma: float) -> torch.Tensor:
    """(length - size + 1, length) float64: row i holds the normalised Gaussian of `size` taps at
    columns i .. i + size - 1, so that band @ signal is the signal's 'valid' Gaussian smoothing."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    band = torch.zeros(length - size + 1, length, dtype=torch.float64)
    for row in range(length - size + 1):
        band[row, row : row + size] = kernel
    return band


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame: (B, T, C, H, W) x 2 -> (B, T) float64, 1 for identical frames.

    Frames smaller than the 11-pixel window use the largest odd window that fits. The Gaussian
    window is separable, so each local mean is rows @ image @ cols^T with banded matrices: one
    float64 matmul instead of a depthwise 11x11 float64 convolution (10x faster on a CPU, the same
    numbers to rounding)."""
    _check_pair(prediction, target)
    b, t, c, h, w = prediction.shape
    size = min(SSIM_WINDOW, h - (1 - h % 2), w - (1 - w % 2))
    rows = _gaussian_band(h, size, SSIM_SIGMA).to(prediction.device)
    cols = _gaussian_band(w, size, SSIM_SIGMA).to(prediction.device)
    x = prediction.double().reshape(b * t * c, h, w)
    y = target.double().reshape(b * t * c, h, w)
    # the five local means at once: (5, B*T*C, h', w')
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = rows @ torch.stack([x, y, x * x, y * y, x * y]) @ cols.T
    var_x = mean_xx - mu_x**2
    var_y = mean_yy - mu_y**2
    cov = mean_xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.reshape(b * t, -1).mean(dim=1).reshape(b, t)


LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def high_frequency_energy(frames: torch.Tensor) -> torch.Tensor:
    """Squared discrete Laplacian summed over pixels and channels: (B, T, C, H, W) -> (B, T) float64.

    Flat regions and linear ramps give 0; every edge and fine texture adds."""
    if frames.ndim != 5:
        raise ValueError(f"frames {tuple(frames.shape)} must be (B, T, C, H, W)")
    b, t, c, h, w = frames.shape
    kernel = torch.tensor(LAPLACIAN, dtype=torch.float64, device=frames.device).expand(c, 1, 3, 3)
    response = F.conv2d(frames.double().reshape(b * t, c, h, w), kernel, groups=c)  # valid region
    return response.pow(2).flatten(1).sum(dim=1).reshape(b, t)


def sharpness(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """High-frequency energy of the prediction over that of the target per step, each averaged over
    clips: (B, T, C, H, W) x 2 -> (T,) float64; 1 as sharp as the truth, < 1 blurrier, > 1 noisier,
    NaN at a step whose true frames are all flat."""
    _check_pair(prediction, target)
    generated = high_frequency_energy(prediction).mean(dim=0)
    truth = high_frequency_energy(target).mean(dim=0)
    return torch.where(truth > 0, generated / truth.clamp_min(1e-30), math.nan)


def copy_last_frame(context_frames: torch.Tensor, horizon: int) -> torch.Tensor:
    """The baseline prediction: the last context frame, repeated.

    (B, Tc, C, H, W) -> (B, horizon, C, H, W)."""
    return context_frames[:, -1:].expand(-1, horizon, -1, -1, -1).clone()


def motion_ratio(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How much the predicted frames change from one to the next, relative to the recorded ones:
    mean |x_t - x_{t-1}| of the prediction / the same of the target, per step after the first.

    (B, T, C, H, W) x 2 -> (B, T - 1) float64. A rollout frozen on one frame scores 0, one that
    has dissolved into noise scores far above 1; a rollout that moves as the world does, about 1."""
    _check_pair(prediction, target)

    def change(frames: torch.Tensor) -> torch.Tensor:
        return (frames[:, 1:].double() - frames[:, :-1].double()).abs().flatten(2).mean(dim=2)

    return change(prediction) / change(target).clamp_min(1e-8)


def per_step(values: torch.Tensor | np.ndarray) -> list[float]:
    """(B, T) or (B, T, K) -> T means over episodes (and objects); NaNs ignored, NaN where a step has
    no value at all."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3:  # (B, T, K) -> (B K, T)
        array = array.transpose(0, 2, 1).reshape(-1, array.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN step is reported as NaN on purpose
        return [float(v) for v in np.nanmean(array, axis=0)]


def overall(values: torch.Tensor | np.ndarray) -> float:
    """Mean over every episode and step (NaNs ignored; NaN when nothing is left)."""
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).all():
        return math.nan
    return float(np.nanmean(array))
