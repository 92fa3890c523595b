"""LowKey (Cherepanova et al., ICLR 2021): an ensemble attack under a perceptual penalty.

Each surrogate f_i reads a picture and its mirror image, F_i(x) = l2_norm(f_i(x) + f_i(flip x)),
and serves twice: on x' and on G(x'), G a Gaussian blur (kernel 7, sigma 3). Per picture the
attack maximises the paper's Eq. (1)

    1/(2n) sum_i [ ||F_i(x) - F_i(x')||^2 + ||F_i(x) - F_i(G(x'))||^2 ] / ||F_i(x)||
        - alpha * LPIPS(x, x')

Both copies are compared with the clean, unblurred F_i(x) (the official code repeats the plain
features for the blurred models). As in the official code, the squared distance is averaged over
the embedding's coordinates too (a torch.mean over models and dimensions, i.e. the paper's term
over D); alpha = 0.05 was set against that scale. Signed-gradient ascent x' <- x' + 0.0025
sign(grad), 50 steps from x + U(-0.005, 0.005), no projection; clamped to [0, 1] only at the end.

Pixel domain: the official pixel tensor is RGB in [0, 1] (steps, start noise and clamp are in
those units, as here); its models and LPIPS read 2x - 1 in [-1, 1]. Here each Extractor maps
[0, 1] to its own input range itself (the zoo: [-1, 1]) and LPIPS gets 2x - 1. The blur acts in
[0, 1] before that map, as in the official code (it commutes with 2x - 1: its kernel sums to 1).

`perceptual`: "lpips" (LPIPS-Alex v0.1, as the paper; its ImageNet AlexNet trunk comes from
`make weights-lpips`, see facecure.attacks.lpips_net) or "dssim", kept for comparison:
facecure.attacks.budget.dssim with the same weight 0.05. Both are 0 at x' = x and grow with
visible structure change, but DSSIM is not calibrated to LPIPS: with it the trade-off (and so the
budget) differs from the paper's, which is why `perceptual` is part of the attack's fingerprint.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from facecure.attacks import lpips_net
from facecure.attacks.base import Attack
from facecure.attacks.budget import dssim
from facecure.attacks.lpips_net import NETS, lpips_model, trunk_path
from facecure.extractors.base import Extractor

ALEXNET_FILE = NETS["alex"][1]  # torchvision's published AlexNet, still read where given
PERCEPTUAL = ("lpips", "dssim")


def alexnet_weights_path(configured: str | Path | None = None) -> Path:
    """LPIPS-Alex's trunk: `configured`, else `make weights-lpips`' file, else torch hub's cache."""
    return trunk_path("alex", configured)


def lpips_distance(x: torch.Tensor, y: torch.Tensor,
                   alexnet_weights: str | Path | None = None) -> torch.Tensor:
    """LPIPS-Alex v0.1 per picture of float batches (B, 3, H, W) RGB in [0, 1] -> (B,) >= 0."""
    return lpips_net.lpips_distance(x, y, alexnet_weights, net="alex")


class LowKey(Attack):
    name = "lowkey"
    unkeyed = ("alexnet_weights",)  # where the trunk lies (converted or torchvision's: one net)

    def __init__(self, surrogates: Sequence[Extractor], steps: int = 50, step_size: float = 0.0025,
                 noise: float = 0.005, blur_kernel: int = 7, blur_sigma: float = 3.0,
                 perceptual: str = "lpips", perceptual_weight: float = 0.05,
                 alexnet_weights: str | None = None, image_size: int | None = 112, seed: int = 0):
        if not surrogates or not all(s.differentiable for s in surrogates):
            raise ValueError("lowkey needs differentiable surrogate extractors")
        if perceptual not in PERCEPTUAL:
            raise ValueError(f"attack.perceptual must be one of {PERCEPTUAL}, not {perceptual!r}")
        self.surrogates = list(surrogates)
        self.steps, self.step_size, self.noise = steps, step_size, noise
        self.blur_kernel, self.blur_sigma = blur_kernel, blur_sigma
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.image_size, self.seed = image_size, seed
        self._lpips = self._build_lpips(alexnet_weights) if perceptual == "lpips" else None

    @staticmethod
    def _build_lpips(weights: str | None) -> torch.nn.Module:
        """Fail now, before any picture is attacked, when LPIPS cannot be built."""
        try:
            return lpips_model(alexnet_weights_path(weights), "alex")
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err} Or run with attack=lowkey_dssim (attack.perceptual=dssim: a stand-in "
                "penalty, DSSIM with the same weight; results then record perceptual=dssim)."
            ) from None

    def params(self) -> dict:
        return {**super().params(), "steps": self.steps, "step_size": self.step_size,
                "noise": self.noise, "blur_kernel": self.blur_kernel, "blur_sigma": self.blur_sigma,
                "perceptual": self.perceptual, "perceptual_weight": self.perceptual_weight,
                "seed": self.seed, "surrogates": [s.fingerprint for s in self.surrogates]}

    @staticmethod
    def features(f: Extractor, x: torch.Tensor) -> torch.Tensor:
        """F(x) = l2_norm(f(x) + f(flip x)) on f's raw embeddings, as the official code: (B, D)."""
        def raw(v):
            return f.features(f.preprocess(v))
        return F.normalize(raw(x) + raw(x.flip(-1)), dim=1)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """G: Gaussian blur with reflected borders (as the official GaussianSmoothing)."""
        return gaussian_blur(x, [self.blur_kernel] * 2, [self.blur_sigma] * 2)

    def perceptual_distance(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self._lpips is None:
            return dssim(x_adv, x)
        return self._lpips.to(x.device)(2 * x_adv - 1, 2 * x - 1).flatten()

    def objective(self, x_adv: torch.Tensor, x: torch.Tensor,
                  clean: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Eq. (1) per picture (B,), to maximise; `clean`: F_i(x) per surrogate, if computed."""
        if clean is None:
            with torch.no_grad():
                clean = [self.features(f, x) for f in self.surrogates]
        blurred = self.blur(x_adv)
        terms = [(self.features(f, view) - f_x).pow(2).mean(1) / f_x.norm(dim=1)
                 for f, f_x in zip(self.surrogates, clean) for view in (x_adv, blurred)]
        alpha = self.perceptual_weight
        return torch.stack(terms).mean(0) - alpha * self.perceptual_distance(x_adv, x)

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        """x: (B, 3, H, W) RGB in [0, 1] -> the attacked pictures, same shape, in [0, 1]."""
        x = x.detach()
        for f in self.surrogates:
            f.eval().requires_grad_(False)
        with torch.no_grad():
            clean = [self.features(f, x) for f in self.surrogates]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        start = (torch.rand(x.shape, generator=gen) * 2 - 1) * self.noise
        x_adv = x + start.to(x.device)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.objective(x_adv, x, clean).sum(), x_adv)
            x_adv = (x_adv + self.step_size * grad.sign()).detach()
        return x_adv.clamp(0, 1)
