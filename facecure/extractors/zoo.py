"""The embedded zoo: extractors FaceCure trains itself on the synthetic public population.

Trained weights are cached under `cache_dir`, named by a fingerprint of everything that shapes
them (architecture, loss, training recipe, renderer version), so only the first run pays and a
changed recipe never loads stale weights.
"""
from __future__ import annotations

import logging

from lightning.pytorch import seed_everything

from facecure.data.synthetic import RENDERER_VERSION
from facecure.extractors.base import Extractor
from facecure.extractors.training import train_backbone
from facecure.extractors.zoo_nets import ARCHITECTURES
from facecure.utils.cached_fit import cached_fit

log = logging.getLogger(__name__)


def zoo_member(name: str, arch: str, loss: str, embedding_dim: int, input_size: int, train: dict,
               cache_dir: str, arch_kwargs: dict | None = None, trainer: dict | None = None,
               device: str = "cpu") -> Extractor:
    """Build zoo member `name`, training it on first use. Input RGB, normalised to [-1, 1]."""
    arch_kwargs = dict(arch_kwargs or {})
    recipe = {"arch": arch, "arch_kwargs": arch_kwargs, "loss": loss, "embedding_dim": embedding_dim,
              "train": dict(train), "renderer": RENDERER_VERSION}
    seed_everything(train["seed"], workers=True, verbose=False)  # the initial weights too
    backbone = ARCHITECTURES[arch](embedding_dim=embedding_dim, **arch_kwargs)
    fitted = cached_fit(
        cache_dir, name, recipe,
        lambda work: train_backbone(backbone, embedding_dim, loss, dict(train), work, trainer),
        backbone.state_dict, trainer, f"zoo member {name}")
    backbone.load_state_dict(fitted.state)
    return Extractor(name, backbone.eval(), embedding_dim, input_size,
                     fingerprint=f"{name}-{fitted.fingerprint}").to(device)
