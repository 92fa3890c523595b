"""Fawkes v1.0 (April 2021): an untargeted cloak under a DSSIM budget.

For each picture x the cloak x' minimises, per picture,

    c * max(DSSIM(x', x) - th, 0)^2  -  k * sum_s ||f_s(x') - f_s(x)||^2 / ||f_s(x)||

over the surrogate extractors f_s, in tanh space, with Adadelta. The pixel change is clipped
to +-15/255 and the first step is a 0.01 sign step (the feature term has no gradient at
x' = x). k follows the official schedule (`next_k`): doubled while DSSIM <= 0.9 th, halved
while DSSIM >= 1.1 th, back to 1 inside the band, at its bounds, or when DSSIM crosses the
band. The cloak kept is the iterate with the largest feature distance among those within
1.1 th; as the official `save_last_on_failed` (on by default in the tool), a picture whose
best cloak moved its features by less than 0.3 takes the last iterate instead when that one
moved them more and its DSSIM is below 0.015.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from facecure.attacks.base import Attack
from facecure.attacks.budget import dssim
from facecure.extractors.base import Extractor

# Official modes: DSSIM threshold, steps, Adadelta learning rate, which surrogates.
FAWKES_V10_MODES = {
    "low": {"threshold": 0.004, "steps": 40, "lr": 25},
    "mid": {"threshold": 0.012, "steps": 75, "lr": 20},
    "high": {"threshold": 0.017, "steps": 150, "lr": 15},
}
TANH_CONSTANT = 2 - 1e-6  # as in the official code: keeps arctanh finite at 0 and 1


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    return torch.atanh((x - 0.5) * TANH_CONSTANT)


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    return torch.tanh(w) / TANH_CONSTANT + 0.5


class FawkesV10(Attack):
    name = "fawkes_v10"

    def __init__(self, surrogates: Sequence[Extractor], mode: str = "high",
                 threshold: float | None = None, steps: int | None = None, lr: float | None = None,
                 max_change: float = 15 / 255, initial_const: float = 1e6, first_step: float = 0.01,
                 image_size: int | None = 112, seed: int = 0, save_last_on_failed: bool = True):
        if mode not in FAWKES_V10_MODES:
            raise ValueError(f"attack.mode must be one of {sorted(FAWKES_V10_MODES)}, not {mode!r}")
        if not surrogates:
            raise ValueError("fawkes_v10 needs at least one surrogate extractor")
        for s in surrogates:
            if not s.differentiable:
                raise ValueError(f"surrogate {s.name} is not differentiable")
        preset = FAWKES_V10_MODES[mode]
        self.surrogates, self.mode = list(surrogates), mode
        self.threshold = preset["threshold"] if threshold is None else threshold
        self.steps = preset["steps"] if steps is None else steps
        self.lr = preset["lr"] if lr is None else lr
        self.max_change, self.initial_const = max_change, initial_const
        self.first_step, self.image_size, self.seed = first_step, image_size, seed
        self.save_last_on_failed = save_last_on_failed

    def params(self) -> dict:
        return {**super().params(), "mode": self.mode, "threshold": self.threshold,
                "steps": self.steps, "lr": self.lr, "max_change": self.max_change,
                "initial_const": self.initial_const, "first_step": self.first_step,
                "seed": self.seed, "surrogates": [s.fingerprint for s in self.surrogates],
                # the official k schedule and save_last_on_failed (cloaks made before differ)
                "schedule": "official", "save_last_on_failed": self.save_last_on_failed}

    def _cloaked(self, x: torch.Tensor, w0: torch.Tensor, modifier: torch.Tensor) -> torch.Tensor:
        delta = (from_tanh_space(w0 + modifier) - x).clamp(-self.max_change, self.max_change)
        return (x + delta).clamp(0, 1)

    def _feature_distance(self, x_adv: torch.Tensor, clean: list[torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for surrogate, f_x in zip(self.surrogates, clean):
            f_adv = surrogate(x_adv)
            total = total + (f_adv - f_x).pow(2).sum(1) / f_x.norm(dim=1)
        return total

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        x = x.detach()
        for s in self.surrogates:
            s.eval().requires_grad_(False)
        with torch.no_grad():
            clean = [s(x) for s in self.surrogates]
        w0 = to_tanh_space(x)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        modifier = ((torch.rand(x.shape, generator=gen) * 2 - 1) * 1e-4).to(x.device)
        modifier.requires_grad_(True)
        k = torch.ones(len(x), device=x.device)
        side = torch.zeros(len(x), device=x.device)  # the official outside_list: 1 below, -1 above
        best_score = torch.full((len(x),), -1.0, device=x.device)
        best = x.clone()
        opt = torch.optim.Adadelta([modifier], lr=self.lr, rho=0.95, eps=1e-7)
        for step in range(self.steps + 1):
            x_adv = self._cloaked(x, w0, modifier)
            dist = dssim(x_adv, x)
            feat = self._feature_distance(x_adv, clean)
            with torch.no_grad():  # keep the best cloak seen so far within the budget
                ok = (dist <= 1.1 * self.threshold) & (feat > best_score)
                best[ok], best_score[ok] = x_adv[ok].detach(), feat[ok].detach()
            if step == self.steps:
                break
            loss = (self.initial_const * F.relu(dist - self.threshold).pow(2) - k * feat).sum()
            opt.zero_grad()
            loss.backward()
            if step == 0:
                with torch.no_grad():
                    modifier -= self.first_step * modifier.grad.sign()
            else:
                opt.step()
            with torch.no_grad():
                k, side = next_k(k, side, dist, self.threshold)
        # A picture with no iterate inside the budget keeps the last one (as the official tool).
        never = best_score < 0
        best[never] = x_adv[never].detach()
        if self.save_last_on_failed:
            with torch.no_grad():
                last = (best_score < 0.3) & (dist < 0.015) & (feat > best_score)
            best[last] = x_adv[last].detach()
        return best


def next_k(k: torch.Tensor, side: torch.Tensor, dist: torch.Tensor, threshold: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The official weight schedule of the feature term, per picture: (k, side) after a step
    whose DSSIM was `dist`. side: 1 below the band, -1 above it, 0 inside."""
    grow = (dist <= 0.9 * threshold) & (k <= 129)
    shrink = ~grow & (dist >= 1.1 * threshold) & (k >= 1 / 129)
    one = torch.ones_like(k)
    k = torch.where(grow, torch.where(side == -1, one, k * 2),
                    torch.where(shrink, torch.where(side == 1, one, k / 2), one))
    side = torch.where(grow, one, torch.where(shrink, -one, torch.zeros_like(side)))
    return k, side
