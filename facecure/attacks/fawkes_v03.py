"""Fawkes v0.3 (July 2020): a targeted cloak under a DSSIM budget.

For a user, the target class is drawn at random among the 20 classes of a public candidate
set whose centroid is farthest from the user (L2, minimum over the user's pictures). Each
picture x is pulled towards the feature target

    t = f(x) + 2 * (mean f(target class) - mean f(user's pictures))

by minimising, per picture,  c * max(DSSIM(x', x) - th, 0)^2  +  ||f(x') - t|| / ||t||,
in tanh space with Adadelta, the learning rate times 0.8 every steps/3. The cloak kept is the
iterate with the smallest feature loss within 1.1 th (the official code kept the best at any
DSSIM and relied on c = 1e9 to hold the budget; we use the same c and also check it).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facecure.attacks.base import Attack
from facecure.attacks.budget import dssim
from facecure.attacks.fawkes import from_tanh_space, to_tanh_space
from facecure.data.dataset import FaceDataset
from facecure.extractors.base import Extractor, to_tensor
from facecure.utils.io import fingerprint

# Official modes: DSSIM threshold, steps, Adadelta learning rate.
FAWKES_V03_MODES = {
    "min": {"threshold": 0.002, "steps": 20, "lr": 40},
    "low": {"threshold": 0.003, "steps": 50, "lr": 35},
    "mid": {"threshold": 0.005, "steps": 200, "lr": 20},
    "high": {"threshold": 0.008, "steps": 500, "lr": 10},
    "ultra": {"threshold": 0.01, "steps": 1000, "lr": 8},
}


class FawkesV03(Attack):
    name = "fawkes_v03"

    def __init__(self, surrogates: Sequence[Extractor], candidates: FaceDataset, mode: str = "high",
                 threshold: float | None = None, steps: int | None = None, lr: float | None = None,
                 n_farthest: int = 20, initial_const: float = 1e9, image_size: int | None = 224,
                 seed: int = 0, adadelta_eps: float = 1e-8):
        if mode not in FAWKES_V03_MODES:
            raise ValueError(f"attack.mode must be one of {sorted(FAWKES_V03_MODES)}, not {mode!r}")
        if not surrogates or not all(s.differentiable for s in surrogates):
            raise ValueError("fawkes_v03 needs differentiable surrogate extractors")
        if len(candidates.identities) < n_farthest:
            raise ValueError(f"the candidate set has {len(candidates.identities)} classes, fewer "
                             f"than n_farthest={n_farthest}")
        preset = FAWKES_V03_MODES[mode]
        self.surrogates, self.candidates, self.mode = list(surrogates), candidates, mode
        self.threshold = preset["threshold"] if threshold is None else threshold
        self.steps = preset["steps"] if steps is None else steps
        self.lr = preset["lr"] if lr is None else lr
        self.n_farthest, self.initial_const = n_farthest, initial_const
        self.image_size, self.seed = image_size, seed
        self.adadelta_eps = adadelta_eps  # TF1's AdadeltaOptimizer default, as v0.3 used
        self._centroids: list[torch.Tensor] | None = None

    def params(self) -> dict:
        keys = sorted(p.key for pics in self.candidates.identities.values() for p in pics)
        return {**super().params(), "mode": self.mode, "threshold": self.threshold,
                "steps": self.steps, "lr": self.lr, "n_farthest": self.n_farthest,
                "initial_const": self.initial_const, "seed": self.seed,
                "adadelta_eps": self.adadelta_eps,
                "surrogates": [s.fingerprint for s in self.surrogates],
                "candidates": fingerprint(keys)}

    @torch.no_grad()
    def centroids(self) -> list[torch.Tensor]:
        """Per surrogate: (n_classes, D) mean embedding of each candidate class."""
        if self._centroids is None:
            classes = sorted(self.candidates.identities)
            self._centroids = []
            for s in self.surrogates:
                rows = []
                for c in classes:
                    x = torch.stack([to_tensor(p.load()) for p in self.candidates.identities[c]])
                    rows.append(s(x.to(s.device)).mean(0))
                self._centroids.append(torch.stack(rows))
        return self._centroids

    def target_class(self, identity: str, user_features: torch.Tensor) -> int:
        """Random among the n_farthest classes by min-over-pictures L2 (first surrogate)."""
        dist = torch.cdist(self.centroids()[0], user_features).min(1).values
        farthest = dist.topk(self.n_farthest).indices.cpu().numpy()
        rng = np.random.default_rng([self.seed, int(fingerprint(identity, 8), 16)])
        return int(farthest[rng.integers(len(farthest))])

    @torch.no_grad()
    def feature_targets(self, x: torch.Tensor, identities: Sequence[str]) -> list[torch.Tensor]:
        clean = [s(x) for s in self.surrogates]
        targets = [f.clone() for f in clean]
        ids = np.array(identities)
        for identity in dict.fromkeys(identities):
            rows = torch.from_numpy(ids == identity).to(x.device)
            c = self.target_class(identity, clean[0][rows])
            for f, t, cent in zip(clean, targets, self.centroids()):
                t[rows] = f[rows] + 2 * (cent[c] - f[rows].mean(0))
        return targets

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        """x: (B, 3, H, W) RGB in [0, 1]; all pictures of a user must be in the same batch."""
        x = x.detach()
        for s in self.surrogates:
            s.eval().requires_grad_(False)
        targets = self.feature_targets(x, identities)
        w0 = to_tanh_space(x)
        modifier = torch.full_like(x, 1e-6, requires_grad=True)
        opt = torch.optim.Adadelta([modifier], lr=self.lr, rho=0.95, eps=self.adadelta_eps)
        decay_every = max(1, self.steps // 3)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_every, gamma=0.8)
        best_score = torch.full((len(x),), float("inf"), device=x.device)
        best = x.clone()
        for step in range(self.steps + 1):
            x_adv = from_tanh_space(w0 + modifier).clamp(0, 1)
            dist = dssim(x_adv, x)
            feat = sum((s(x_adv) - t).norm(dim=1) / t.norm(dim=1)
                       for s, t in zip(self.surrogates, targets))
            with torch.no_grad():
                ok = (dist <= 1.1 * self.threshold) & (feat < best_score)
                best[ok], best_score[ok] = x_adv[ok].detach(), feat[ok].detach()
            if step == self.steps:
                break
            loss = (self.initial_const * F.relu(dist - self.threshold).pow(2) + feat).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        return best
