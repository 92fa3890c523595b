"""What a perturbation costs: DSSIM (as Fawkes measures it), L-infinity and PSNR.

All take float batches (B, 3, H, W) of RGB in [0, 1] and return one value per picture.
SSIM is pytorch-msssim's (Gaussian window 11, sigma 1.5, as tf.image.ssim used by Fawkes).
"""
from __future__ import annotations

import torch
from pytorch_msssim import ssim


def dssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per picture; differentiable."""
    win = 11 if min(x.shape[-2:]) >= 11 else (min(x.shape[-2:]) // 2) * 2 - 1
    return (1 - ssim(x, y, data_range=1.0, size_average=False, win_size=win)) / 2


def linf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).abs().flatten(1).amax(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def measure(original: torch.Tensor, perturbed: torch.Tensor, lpips=None) -> list[dict]:
    """Budget of each picture: {"dssim", "linf", "psnr", "lpips"} in 0-1 pixel units.

    `lpips(x, y) -> (B,)` is LPIPS-Alex when AlexNet's weights are on this machine; else the
    budget says `"lpips": None` (not measured) rather than a stand-in number."""
    d, m, p = dssim(perturbed, original), linf(perturbed, original), psnr(perturbed, original)
    lp = lpips(perturbed, original) if lpips is not None else [None] * len(d)
    return [{"dssim": float(a), "linf": float(b), "psnr": float(c),
             "lpips": None if e is None else float(e)} for a, b, c, e in zip(d, m, p, lp)]
