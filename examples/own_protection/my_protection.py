"""A protection kept in your own project, outside FaceCure's tree: a Gaussian blur.

Blur is not a serious protection (it changes every picture a lot and protects no one); it is
here as the shape of one: an `Attack` subclass with `perturb` and a `params()` that names every
setting (the perturbed store is keyed by it). Run it as README.md in this folder says.
"""
from __future__ import annotations

from torchvision.transforms.functional import gaussian_blur

from facecure.attacks.base import Attack


class Blur(Attack):
    name = "blur"

    def __init__(self, sigma: float = 1.0, image_size: int | None = None, seed: int = 0):
        self.sigma, self.image_size, self.seed = sigma, image_size, seed

    def params(self) -> dict:
        return {**super().params(), "sigma": self.sigma, "seed": self.seed}

    def perturb(self, x, identities):
        """(B, 3, H, W) RGB in [0, 1] -> the blurred batch; nothing random, nothing per user."""
        return gaussian_blur(x, kernel_size=5, sigma=self.sigma).clamp(0, 1)
