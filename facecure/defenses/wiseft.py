"""WiSE-FT (Wortsman et al., 2021), as the paper uses it on CLIP (App. B.3):

    θ = α·θ_tuned + (1 − α)·θ_CLIP,   α ∈ [0, 1]

over every floating-point entry of the state dict; entries that are not floating point (integer
buffers such as counters or position ids) are taken from the zero-shot model. The paper reports
α = 0.6 (accuracy 92% on FaceScrub and half the zero-shot error rate under LowKey).
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint


def interpolate_weights(zero_shot: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """α·tuned + (1 − α)·zero_shot per floating-point tensor; exact at α = 0 and α = 1."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"WiSE-FT alpha must be in [0, 1], not {alpha}")
    if set(zero_shot) != set(tuned):
        differ = sorted(set(zero_shot) ^ set(tuned))
        raise KeyError(f"zero-shot and fine-tuned state dicts differ in keys: {differ[:5]}")
    mixed = {}
    for key, zs in zero_shot.items():
        ft = tuned[key].to(zs.device)
        if ft.shape != zs.shape:
            raise ValueError(f"{key}: zero-shot {tuple(zs.shape)} vs fine-tuned {tuple(ft.shape)}")
        # α·ft + (1−α)·zs, not zs + α(ft − zs): the latter is not exactly ft at α = 1.
        mixed[key] = alpha * ft.to(zs.dtype) + (1 - alpha) * zs if zs.is_floating_point() \
            else zs.clone()
    return mixed


def wiseft_extractor(base: Extractor, tuned: dict[str, torch.Tensor], alpha: float,
                     tuned_fingerprint: str,
                     model_of: Callable[[Extractor], nn.Module]) -> Extractor:
    """A copy of `base` (same class, preprocessing and embedding) whose model `model_of(base)`
    carries the interpolated weights; named f"{base.name}+wiseft@{alpha}"."""
    alpha = float(alpha)
    extractor = copy.deepcopy(base)  # keeps the zoo's backbone = model.visual sharing intact
    zero_shot = model_of(base).state_dict()
    model_of(extractor).load_state_dict(interpolate_weights(zero_shot, tuned, alpha))
    extractor.name = f"{base.name}+wiseft@{alpha}"
    extractor.fingerprint = "wiseft-" + fingerprint(
        {"base": base.fingerprint, "tuned": tuned_fingerprint, "alpha": alpha})
    return extractor.eval()
