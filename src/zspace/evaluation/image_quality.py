"""Image fidelity: PSNR and SSIM for images in [0, 1], per image.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, dynamic range 1, averaged over the valid region and channels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DataError


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise DataError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4:
        raise DataError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """10 log10(1 / MSE) per image, (N,), in dB."""
    _check(x, y)
    mse = ((x.float() - y.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(eps))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image, (N,)."""
    _check(x, y)
    side = min(x.shape[-2:])
    if side < window:  # small images: the largest odd window that fits
        window = side if side % 2 else side - 1
    c = x.shape[1]
    w = _gaussian_window(window, sigma).to(x.device).expand(c, 1, window, window)
    x, y = x.float(), y.float()

    def blur(t):
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def mean_psnr_db(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR of the mean squared error over a whole set (the usual benchmark figure), dB."""
    _check(x, y)
    mse = float(((x.double() - y.double()) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))
