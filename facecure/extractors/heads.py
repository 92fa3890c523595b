"""Identity heads of the zoo, written as their papers write them.

Each head maps embeddings z (B, D) and labels (B,) to (logits (B, C), extra loss): the
training loss is cross-entropy on the logits plus the extra term. theta is the angle between
z and the class centre W_y (both L2-normalised).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxHead(nn.Module):
    """Plain linear classifier (the WebFace / FaceNet-era recipe)."""

    def __init__(self, embedding_dim: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(embedding_dim, n_classes)

    def forward(self, z, labels):
        return self.fc(z), z.new_zeros(())


class _AngularHead(nn.Module):
    """Shared by the margin losses. `margin_scale` in [0, 1] multiplies the margin: training
    from scratch ramps it from 0 (a normalised softmax) to 1, since with the full margin on
    random features every target logit starts far below the others and training stalls."""

    def __init__(self, embedding_dim: int, n_classes: int, s: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.s = s
        self.margin_scale = 1.0

    def cosine(self, z):
        return F.linear(F.normalize(z, dim=1), F.normalize(self.weight, dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)


class ArcFaceHead(_AngularHead):
    """ArcFace (Deng et al. 2019): s * cos(theta_y + m) for the true class, s = 64, m = 0.5."""

    def __init__(self, embedding_dim: int, n_classes: int, s: float = 64.0, m: float = 0.5):
        super().__init__(embedding_dim, n_classes, s)
        self.m = m

    def margin_logits(self, cos, labels, m):
        m = torch.as_tensor(m, dtype=cos.dtype, device=cos.device)
        cos_y = cos.gather(1, labels[:, None])
        theta = torch.acos(cos_y)
        # Past theta = pi - m, cos(theta + m) would rise again: there insightface falls back to
        # a CosFace-style penalty, which keeps the target logit monotonic in theta.
        target = torch.where(theta + m < math.pi, torch.cos(theta + m), cos_y - m * torch.sin(m))
        return self.s * cos.scatter(1, labels[:, None], target)

    def forward(self, z, labels):
        return self.margin_logits(self.cosine(z), labels, self.m * self.margin_scale), z.new_zeros(())


class CosFaceHead(_AngularHead):
    """CosFace (Wang et al. 2018): s * (cos(theta_y) - m), s = 64, m = 0.35."""

    def __init__(self, embedding_dim: int, n_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__(embedding_dim, n_classes, s)
        self.m = m

    def forward(self, z, labels):
        cos = self.cosine(z)
        margin = self.m * self.margin_scale
        return self.s * (cos - margin * F.one_hot(labels, cos.shape[1])), z.new_zeros(())


class MagFaceHead(ArcFaceHead):
    """MagFace (Meng et al. 2021): ArcFace whose margin m(a) rises linearly from l_m = 0.45 to
    u_m = 0.8 as the feature norm a goes from l_a = 10 to u_a = 110, plus lambda_g * g(a) with
    g(a) = a / u_a^2 + 1 / a, which pushes confident (easy) faces to large norms."""

    def __init__(self, embedding_dim: int, n_classes: int, s: float = 64.0, l_a: float = 10.0,
                 u_a: float = 110.0, l_m: float = 0.45, u_m: float = 0.8, lambda_g: float = 35.0):
        super().__init__(embedding_dim, n_classes, s, m=l_m)
        self.l_a, self.u_a, self.l_m, self.u_m, self.lambda_g = l_a, u_a, l_m, u_m, lambda_g

    def forward(self, z, labels):
        a = z.norm(dim=1, keepdim=True).clamp(self.l_a, self.u_a)
        m = (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m
        g = a / self.u_a ** 2 + 1 / a
        return (self.margin_logits(self.cosine(z), labels, m * self.margin_scale),
                self.lambda_g * g.mean())


HEADS = {"softmax": SoftmaxHead, "arcface": ArcFaceHead, "cosface": CosFaceHead,
         "magface": MagFaceHead}
