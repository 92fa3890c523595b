"""Random noise within an L-infinity budget: the control a protection must beat, and the
smallest complete attack (a template for adding your own: this file and conf/attack/noise.yaml).

Every pixel moves by +-epsilon (a random sign), the most an L-infinity budget allows without
any optimisation. A protection that protects no better than this noise of the same budget owes
nothing to what it optimised.

An attack perturbs float batches (B, 3, H, W) in [0, 1]; the perturbed store batches whole
users, so the noise is drawn per user from (seed, user) and a picture's twin never depends on
which other users shared its batch. params() lists every setting: it keys the store.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from facecure.attacks.base import Attack
from facecure.utils.io import fingerprint


class RandomNoise(Attack):
    name = "noise"

    def __init__(self, epsilon: float = 8 / 255, image_size: int | None = None, seed: int = 0):
        if not 0 < epsilon <= 1:
            raise ValueError(f"attack.epsilon must be in (0, 1] (pixel units), not {epsilon}")
        self.epsilon, self.image_size, self.seed = epsilon, image_size, seed

    def params(self) -> dict:
        return {**super().params(), "epsilon": self.epsilon, "seed": self.seed}

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        out = x.clone()
        for user in dict.fromkeys(identities):  # each user's pictures, in batch order
            rows = [i for i, name in enumerate(identities) if name == user]
            gen = torch.Generator().manual_seed(int(fingerprint([self.seed, user], 12), 16))
            sign = torch.randint(0, 2, (len(rows), *x.shape[1:]), generator=gen) * 2 - 1
            out[rows] = x[rows] + self.epsilon * sign.to(x)
        return out.clamp(0, 1)
