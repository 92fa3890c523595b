"""L-infinity PGD against an ensemble of surrogates (the paper's transfer-across-time attack).

Per picture, over the surrogates f_s, with the Fawkes-style normalised feature distance:

    untargeted: maximise  L(x') = mean_s ||f_s(x') - f_s(x)||^2 / ||f_s(x)||
    targeted:   minimise  L(x') = mean_s ||f_s(x') - t_s||^2 / ||t_s||

x' <- Proj(x' +- step_size * sign(grad L)), Proj onto {||x' - x||_inf <= eps} and [0, 1], from a
uniform random start in that ball (Madry et al.). The last iterate is returned.

Target of a user (targeted mode): t_s = mean f_s over the pictures of one identity of a candidate
set disjoint from the evaluated people (by default rendered faces of the `candidates` population,
like Fawkes v0.3's), drawn per user from (seed, user). It depends on nothing else in the batch:
the store batches whole users, a batch may hold a single user, and a stored cloak must not depend
on which other users shared its batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from facecure.attacks.base import Attack
from facecure.data.dataset import FaceDataset
from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint


class PGD(Attack):
    name = "pgd"
    unkeyed = ("candidates",)  # keyed by params() when targeted; untargeted PGD ignores them

    def __init__(self, surrogates: Sequence[Extractor], epsilon: float = 16 / 255, steps: int = 100,
                 step_size: float | None = None, random_start: bool = True, targeted: bool = False,
                 candidates: FaceDataset | None = None, image_size: int | None = 112, seed: int = 0):
        if not surrogates or not all(s.differentiable for s in surrogates):
            raise ValueError("pgd needs differentiable surrogate extractors")
        if not targeted and not random_start:
            raise ValueError("untargeted pgd needs random_start: the feature distance to f(x) "
                             "has zero gradient at x' = x, so PGD would never move")
        if targeted and not (candidates and candidates.identities):
            raise ValueError("targeted pgd needs attack.candidates, a data set of target identities")
        self.surrogates, self.epsilon, self.steps = list(surrogates), epsilon, steps
        # Madry et al.'s rule: the steps together can cross the ball 2.5 times over.
        self.step_size = 2.5 * epsilon / max(steps, 1) if step_size is None else step_size
        self.random_start, self.targeted = random_start, targeted
        self.candidates = candidates if targeted else None
        self.image_size, self.seed = image_size, seed
        self._centroids: list[torch.Tensor] | None = None

    def params(self) -> dict:
        out = {**super().params(), "epsilon": self.epsilon, "steps": self.steps,
               "step_size": self.step_size, "random_start": self.random_start,
               "targeted": self.targeted, "seed": self.seed,
               "surrogates": [s.fingerprint for s in self.surrogates]}
        if self.targeted:
            out["candidates"] = fingerprint(sorted(
                p.key for pics in self.candidates.identities.values() for p in pics))
        return out

    @torch.no_grad()
    def centroids(self) -> list[torch.Tensor]:
        """Per surrogate: (n_candidates, D) mean embedding of each candidate identity."""
        if self._centroids is None:
            classes = [self.candidates.identities[c] for c in sorted(self.candidates.identities)]
            # embed() takes pictures of any size (a folder data set mixes sizes)
            self._centroids = [torch.stack([s.embed([p.load() for p in pics]).mean(0)
                                            for pics in classes]) for s in self.surrogates]
        return self._centroids

    def target_class(self, identity: str) -> int:
        """Index (into sorted candidate names) of the user's target, drawn from (seed, user)."""
        rng = np.random.default_rng([self.seed, int(fingerprint(identity, 8), 16)])
        return int(rng.integers(len(self.candidates.identities)))

    @torch.no_grad()
    def references(self, x: torch.Tensor, identities: Sequence[str]) -> list[torch.Tensor]:
        """Per surrogate (B, D): f_s(x) (untargeted) or the user's target t_s (targeted)."""
        if not self.targeted:
            return [s(x) for s in self.surrogates]
        rows = [self.target_class(i) for i in identities]
        return [c[rows].to(x.device) for c in self.centroids()]

    def loss(self, x_adv: torch.Tensor, references: list[torch.Tensor]) -> torch.Tensor:
        """L(x') per picture (B,): mean over surrogates of ||f_s(x') - r_s||^2 / ||r_s||."""
        return torch.stack([(s(x_adv) - r).pow(2).sum(1) / r.norm(dim=1)
                            for s, r in zip(self.surrogates, references)]).mean(0)

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        """x: (B, 3, H, W) RGB in [0, 1] -> x' in [0, 1] with ||x' - x||_inf <= epsilon."""
        x = x.detach()
        for s in self.surrogates:
            s.eval().requires_grad_(False)
        refs = self.references(x, identities)
        direction = -1.0 if self.targeted else 1.0  # descend towards t, or ascend away from f(x)
        x_adv = x.clone()
        if self.random_start:
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            start = (torch.rand(x.shape, generator=gen) * 2 - 1) * self.epsilon
            x_adv = (x + start.to(x.device)).clamp(0, 1)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(x_adv, refs).sum(), x_adv)
            x_adv = x_adv.detach() + direction * self.step_size * grad.sign()
            x_adv = (x + (x_adv - x).clamp(-self.epsilon, self.epsilon)).clamp(0, 1)
        return x_adv.detach()
