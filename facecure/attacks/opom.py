"""OPOM (Zhong & Deng, TPAMI 2022, "OPOM: customized invisible cloak towards face privacy
protection"; public code zhongyy/OPOM): one person, one mask.

Each user gets one additive mask delta, ||delta||_inf <= epsilon (8/255), the same on every picture
they post, optimised over all of those pictures at once (the store batches whole users). Per
surrogate f the user's clean features A = l2_norm(f(x_1..x_n)) stand for their feature subspace;
each masked picture's feature y_j = l2_norm(f(x_j + delta)) is pushed away from its nearest point
P(y_j) in one approximation of that subspace (`variant`):

    class_center  the mean of A (the hull with every weight 1/n)
    convex_hull   argmin ||w A - y||, w >= 0, sum w = 1 (the paper's best; the official default)
    affine_hull   argmin ||w A - y||, sum w = 1

maximising mean_f MSE(y, P(y)), P(y) held fixed within a step (the official code solves it apart
from the graph). Inside the convex hull the nearest point is y itself and the gradient vanishes,
so convex_hull starts with `hull_warmup` class-centre steps (the official nter = 5).

Steps as the official FIM (its base setting: 16 rounds, step 1/255): each picture starts at
x_j + U(-eps, eps); then per step the gradient is averaged over the user's pictures and signed,
x_j' <- x_j' + step_size * sign(mean_j grad_j), the mask is delta = clip(mean_j (x_j' - x_j), eps)
and x_j' = clamp(x_j + delta, 0, 1). `momentum` adds the official MI variant's accumulated,
mean-|grad|-normalised gradient (without DFANet's dropout surrogates, not built here).

The random start is drawn from (seed, user), so a stored cloak does not depend on which other
users shared its batch; it does depend on the user's whole set of pictures, as the mask does.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from facecure.attacks.base import Attack
from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint

VARIANTS = ("class_center", "convex_hull", "affine_hull")
# The sum-to-one constraint as one heavily weighted extra row of the least-squares problem
# (NNLS then solves the simplex-constrained projection; the residual sum error is ~1/weight^2).
SIMPLEX_WEIGHT = 1e3


def nearest_in_convex_hull(points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row of y (m, D): the nearest point of the convex hull of `points` (n, D) -> (m, D)."""
    a = points.detach().double().cpu().numpy()
    rows = np.vstack([a.T, np.full((1, len(a)), SIMPLEX_WEIGHT)])
    weights = np.stack([nnls(rows, np.append(v, SIMPLEX_WEIGHT))[0]
                        for v in y.detach().double().cpu().numpy()])
    weights /= weights.sum(1, keepdims=True)  # exactly on the simplex
    return torch.from_numpy(weights @ a).to(y)


def nearest_in_affine_hull(points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row of y (m, D): the nearest point of the affine hull of `points` (n, D) -> (m, D)."""
    base = points[:1].detach().double()
    span = (points[1:].detach().double() - base).T  # (D, n - 1)
    if span.shape[1] == 0:
        return base.expand(len(y), -1).to(y)
    coef = torch.linalg.lstsq(span, (y.detach().double() - base).T, driver="gelsd").solution
    return (base + (span @ coef).T).to(y)


class OPOM(Attack):
    name = "opom"

    def __init__(self, surrogates: Sequence[Extractor], variant: str = "convex_hull",
                 epsilon: float = 8 / 255, step_size: float = 1 / 255, steps: int = 16,
                 hull_warmup: int = 5, momentum: bool = False, image_size: int | None = 112,
                 seed: int = 0):
        if not surrogates or not all(s.differentiable for s in surrogates):
            raise ValueError("opom needs differentiable surrogate extractors")
        if variant not in VARIANTS:
            raise ValueError(f"attack.variant must be one of {VARIANTS}, not {variant!r}")
        self.surrogates, self.variant = list(surrogates), variant
        self.epsilon, self.step_size, self.steps = epsilon, step_size, steps
        self.hull_warmup, self.momentum = hull_warmup, momentum
        self.image_size, self.seed = image_size, seed

    def params(self) -> dict:
        return {**super().params(), "variant": self.variant, "epsilon": self.epsilon,
                "step_size": self.step_size, "steps": self.steps,
                "hull_warmup": self.hull_warmup if self.variant == "convex_hull" else None,
                "momentum": self.momentum, "seed": self.seed,
                "surrogates": [s.fingerprint for s in self.surrogates]}

    @staticmethod
    def features(f: Extractor, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(f.features(f.preprocess(x)), dim=1)

    def nearest(self, clean: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """P(y): the nearest point of the user's subspace approximation at this step."""
        if self.variant == "class_center" or (self.variant == "convex_hull"
                                              and step < self.hull_warmup):
            return clean.mean(0, keepdim=True).expand_as(y)
        if self.variant == "convex_hull":
            return nearest_in_convex_hull(clean, y)
        return nearest_in_affine_hull(clean, y)

    def objective(self, x_adv: torch.Tensor, clean: list[torch.Tensor], step: int) -> torch.Tensor:
        """mean_f MSE(y, P(y)) over one user's pictures, to maximise (a scalar)."""
        terms = []
        for f, a in zip(self.surrogates, clean):
            y = self.features(f, x_adv)
            terms.append(F.mse_loss(y, self.nearest(a, y, step)))
        return torch.stack(terms).mean()

    def start(self, x: torch.Tensor, identity: str) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(int(fingerprint([self.seed, identity], 8), 16))
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * self.epsilon
        return x + noise.to(x.device)

    def mask(self, x: torch.Tensor, identity: str) -> torch.Tensor:
        """One user's pictures (n, 3, H, W) -> their mask (1, 3, H, W), within +-epsilon."""
        with torch.no_grad():
            clean = [self.features(f, x) for f in self.surrogates]
        x_adv, delta, accumulated = self.start(x, identity), torch.zeros_like(x[:1]), 0
        for step in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.objective(x_adv, clean, step), x_adv)
            if self.momentum:  # the MI variant: per picture, normalised by its mean |grad|
                accumulated = accumulated + grad / grad.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
                direction = accumulated.sign()
            else:
                direction = grad.mean(0, keepdim=True).sign()
            x_adv = x_adv.detach() + self.step_size * direction
            delta = (x_adv - x).mean(0, keepdim=True).clamp(-self.epsilon, self.epsilon)
            x_adv = (x + delta).clamp(0, 1)
        return delta

    def perturb(self, x: torch.Tensor, identities: Sequence[str]) -> torch.Tensor:
        """x: (B, 3, H, W) RGB in [0, 1], whole users -> each user's pictures plus their mask."""
        x = x.detach()
        for f in self.surrogates:
            f.eval().requires_grad_(False)
        out = x.clone()
        for identity in dict.fromkeys(identities):
            rows = torch.tensor([i for i, u in enumerate(identities) if u == identity])
            out[rows] = (x[rows] + self.mask(x[rows], identity)).clamp(0, 1)
        return out
