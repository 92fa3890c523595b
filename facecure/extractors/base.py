"""The extractor interface: pictures in, one embedding per picture out.

An extractor owns its preprocessing. `forward(x)` takes a float batch (B, 3, H, W) of RGB in
[0, 1] at any size and is differentiable when `differentiable` is True, so an attack can use
the extractor as a surrogate. `embed(pictures)` takes PIL images or uint8 (H, W, 3) RGB arrays
of any size and returns a float32 tensor (N, D).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from facecure.data.images import to_rgb


def to_tensor(picture: Image.Image | np.ndarray) -> torch.Tensor:
    """PIL image or uint8 (H, W, 3) RGB array -> float (3, H, W) in [0, 1]."""
    arr = to_rgb(picture) if isinstance(picture, Image.Image) else picture
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255)


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) -> `size`, bilinear and antialiased: the one resampling every
    part of FaceCure uses (extractors, attacks, defenses), so a picture looks the same to each."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    out = F.interpolate(x if x.dim() == 4 else x[None], size=size, mode="bilinear",
                        align_corners=False, antialias=True)
    return out if x.dim() == 4 else out[0]


class Extractor(nn.Module):
    """A feature extractor g(x) with its own preprocessing.

    Subclasses set `backbone` (a module mapping the preprocessed batch to features) or
    override `features`. Preprocessing: resize to `input_size` (bilinear, antialiased), order
    channels (`"RGB"` or `"BGR"`), scale to `value_range` and normalise by `mean` / `std`
    (given in that value range).
    """

    def __init__(self, name: str, backbone: nn.Module, embedding_dim: int, input_size: int,
                 fingerprint: str, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels: str = "RGB",
                 value_range: float = 1.0, normalize: bool = True, differentiable: bool = True):
        super().__init__()
        self.name, self.backbone = name, backbone
        self.embedding_dim, self.input_size = embedding_dim, input_size
        self.fingerprint, self.channels, self.value_range = fingerprint, channels, value_range
        self.normalize, self.differentiable = normalize, differentiable
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = resize(x, self.input_size)
        if self.channels == "BGR":
            x = x.flip(1)
        return (x * self.value_range - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, D) embeddings (L2-normalised if `normalize`)."""
        z = self.features(self.preprocess(x))
        return F.normalize(z, dim=1) if self.normalize else z

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def embed(self, pictures: Sequence[Image.Image | np.ndarray], batch_size: int = 256,
              progress: bool = False) -> torch.Tensor:
        """Embed pictures of any size: (N, D) float32 on the CPU."""
        self.eval()
        out = []
        for start in tqdm(range(0, len(pictures), batch_size), desc=f"embed {self.name}",
                          disable=not progress, leave=False, unit="batch"):
            batch = [resize(to_tensor(p), self.input_size) for p in pictures[start:start + batch_size]]
            out.append(self(torch.stack(batch).to(self.device)).float().cpu())
        if not out:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(out)
