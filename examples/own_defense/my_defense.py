"""A defense kept in your own project, outside FaceCure's tree: feature squeezing.

The model trainer reduces every picture to `bits` bits per channel before its extractor sees it
(Xu et al., "Feature Squeezing", NDSS 2018): small perturbations below one quantisation step
vanish. It is here as the shape of a defense: a `Defense` subclass whose constructor arguments
are its settings (their values in `conf/defense/squeeze.yaml`) and whose `run(ctx)` returns the
systems it scored. Run it as README.md in this folder says.
"""
from __future__ import annotations

import torch

from facecure.defenses import Defended, Defense
from facecure.extractors import Extractor


class SqueezedExtractor(Extractor):
    """`base` behind a bit-depth reduction of its input pictures."""

    def __init__(self, base: Extractor, bits: int):
        super().__init__(f"{base.name}+squeeze{bits}", base, base.embedding_dim, base.input_size,
                         f"{base.fingerprint}+squeeze{bits}")
        self.bits, self.crop_spec = bits, getattr(base, "crop_spec", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2 ** self.bits - 1
        return self.backbone(torch.round(x * levels) / levels)  # the base does its own preprocessing


class FeatureSqueezing(Defense):
    name = "squeeze"

    def __init__(self, bits: int):
        if not 1 <= bits <= 8:
            raise ValueError(f"defense.bits must be in 1..8, not {bits}")
        self.bits = bits

    def run(self, ctx) -> list[Defended]:
        base = ctx.extractor
        squeezed = SqueezedExtractor(base, self.bits).to(ctx.device)
        return [Defended(ctx.protection(base), "none", base.name, base.fingerprint),
                Defended(ctx.protection(squeezed), self.name, squeezed.name,
                         squeezed.fingerprint, labels={"bits": self.bits})]
