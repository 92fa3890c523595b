"""The attack interface: a protection tool that perturbs a user's pictures before posting."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from facecure.data.dataset import Picture
from facecure.utils.io import fingerprint


class Attack(ABC):
    """Perturbs float batches (B, 3, H, W) of RGB in [0, 1] at `image_size` (None: as given).

    `params()` holds everything that changes the output; its fingerprint keys the perturbed
    store, so a rerun with the same attack never attacks again.
    """

    name = "attack"
    image_size: int | None = None

    def params(self) -> dict:
        return {"name": self.name, "image_size": self.image_size}

    @property
    def fingerprint(self) -> str:
        return f"{self.name}-{fingerprint(self.params())}"

    @abstractmethod
    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> perturbed batch of the same shape and range."""


class ProvidedAttack(Attack):
    """An attack whose perturbed pictures come from elsewhere (an official tool's outputs).

    `provide(pictures)` returns one uint8 (H, W, 3) RGB array per picture (any size); the
    perturbed store keeps them and measures their budget against the original like any other.
    """

    @abstractmethod
    def provide(self, pictures: Sequence[Picture]) -> list[np.ndarray]:
        """One uint8 (H, W, 3) RGB perturbed twin per picture."""

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        raise TypeError(f"{self.name} provides finished pictures; the perturbed store calls "
                        "provide(), not perturb()")


class NoAttack(Attack):
    """`attack=none`: the user posts clean pictures (the trainer's clean error rate)."""

    name = "none"

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        return x
