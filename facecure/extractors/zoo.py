"""The embedded zoo: extractors FaceCure trains itself on the synthetic public population.

Trained weights are cached under `cache_dir`, named by a fingerprint of everything that shapes
them (architecture, loss, training recipe, renderer version), so only the first run pays and a
changed recipe never loads stale weights.
"""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import torch
from lightning.pytorch import seed_everything

from facecure.data.synthetic import RENDERER_VERSION
from facecure.extractors.base import Extractor
from facecure.extractors.training import train_backbone
from facecure.extractors.zoo_nets import ARCHITECTURES
from facecure.utils.io import atomic_write_bytes, exclusive, fingerprint

log = logging.getLogger(__name__)


def zoo_member(name: str, arch: str, loss: str, embedding_dim: int, input_size: int, train: dict,
               cache_dir: str, arch_kwargs: dict | None = None, trainer: dict | None = None,
               device: str = "cpu") -> Extractor:
    """Build zoo member `name`, training it on first use. Input RGB, normalised to [-1, 1]."""
    arch_kwargs = dict(arch_kwargs or {})
    recipe = {"arch": arch, "arch_kwargs": arch_kwargs, "loss": loss, "embedding_dim": embedding_dim,
              "train": dict(train), "renderer": RENDERER_VERSION}
    fp = fingerprint(recipe)
    path = Path(cache_dir) / f"{name}-{fp}.pt"
    seed_everything(train["seed"], workers=True, verbose=False)  # the initial weights too
    backbone = ARCHITECTURES[arch](embedding_dim=embedding_dim, **arch_kwargs)
    with exclusive(path):  # concurrent jobs: one trains, the others load
        if not path.exists():
            log.info("training zoo member %s (first use; cached at %s)", name, path)
            train_backbone(backbone, embedding_dim, loss, dict(train), path.with_suffix(".work"), trainer)
            buf = io.BytesIO()
            torch.save(backbone.state_dict(), buf)
            atomic_write_bytes(path, buf.getvalue())
            shutil.rmtree(path.with_suffix(".work"), ignore_errors=True)  # the resume checkpoints
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone.load_state_dict(state)
    return Extractor(name, backbone, embedding_dim, input_size, fingerprint=f"{name}-{fp}").to(device)
