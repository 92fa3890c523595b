"""The attack interface: a protection tool that perturbs a user's pictures before posting."""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cache

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
    # Constructor settings deliberately left out of params(): they cannot change the pictures
    # (a label, a timeout) or are keyed another way. Every other setting must be in params().
    unkeyed: tuple[str, ...] = ()

    def params(self) -> dict:
        return {"name": self.name, "image_size": self.image_size}

    @property
    def fingerprint(self) -> str:
        params = self.params()
        missing = [s for s in settings_of(type(self)) if s not in params and s not in self.unkeyed]
        if missing:  # a new attack's easy slip, and a silent one: refuse it
            cls = type(self).__name__
            raise TypeError(
                f"{cls}.params() leaves out its setting(s) {', '.join(missing)}: the perturbed "
                f"store keys pictures by params(), so pictures made with another {missing[0]} "
                f"would be reused. Add them to params(), or to {cls}.unkeyed if they cannot "
                "change the pictures")
        return f"{self.name}-{fingerprint(params)}"

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


@cache
def settings_of(cls: type) -> tuple[str, ...]:
    """The named arguments of an attack class's constructor."""
    takes = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in takes if p.name != "self"
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def attack_label(cfg) -> str:
    """How records name an attack config: a tool's own label, else name/mode (fawkes_v10/high)."""
    if cfg.get("label"):
        return str(cfg["label"])
    return cfg["name"] + (f"/{cfg['mode']}" if cfg.get("mode") else "")


def white_box_to(attack, extractor: str) -> bool:
    """Whether the attack optimises against `extractor`: it is one of the attack's surrogates,
    and of every part's where the attack mixes two (a user half v0.3, half v1.0 is white-box
    to neither tool's surrogate alone)."""
    parts = [p for p in (getattr(attack, "first", None), getattr(attack, "second", None)) if p]
    if parts:
        return all(white_box_to(p, extractor) for p in parts)
    return extractor in {s.name for s in getattr(attack, "surrogates", None) or ()}
