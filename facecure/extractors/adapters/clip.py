"""CLIP (Radford et al., 2021) image tower through open_clip, from a local checkpoint.

The model is built by open_clip itself (`open_clip.create_model(model_name, pretrained=None)`,
or `open_clip.CLIP(**model_cfg)` for an explicit config) and its weights read from a local
file: a plain state dict, an open_clip training checkpoint (`{'state_dict': ...}` with
`module.` prefixes) or `.safetensors` (open_clip's `open_clip_model.safetensors`). OpenAI's
original TorchScript `ViT-B-32.pt` is not a state dict: convert it once with
`open_clip.create_model('ViT-B-32-quickgelu', pretrained='ViT-B-32.pt')` + `torch.save(
model.state_dict())`.

OpenAI's weights were trained with QuickGELU, which a state dict does not record: keep
`force_quick_gelu` on for them (open_clip's 'openai' tag does the same) and off for LAION /
DataComp ViT-B-32 weights. Preprocessing: RGB in [0, 1], OpenAI's mean/std, 224 x 224 (the
whole picture resized; open_clip's transform resizes the short side and centre-crops, which is
the same on square face crops). Embedding: `encode_image`, L2-normalised. The extractor's
`backbone` is the whole CLIP model, text tower included, so it can be fine-tuned.
"""
from __future__ import annotations

import logging

import torch

from facecure.extractors.adapters.weights import (
    load_checkpoint,
    load_into,
    pretrained_extractor,
    state_dict_of,
)
from facecure.extractors.base import Extractor

FORMAT = "an open_clip state dict / checkpoint ({'state_dict': ...}) or .safetensors"


class ClipExtractor(Extractor):
    """Embeds with `backbone.encode_image` (B, 3, S, S) -> (B, embed_dim)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(x)


def build_model(model_name: str, model_cfg: dict | None, force_quick_gelu: bool):
    import open_clip
    if model_cfg:
        cfg = dict(model_cfg)
        cfg["quick_gelu"] = bool(force_quick_gelu or cfg.get("quick_gelu", False))
        return open_clip.CLIP(**cfg)
    # open_clip warns (root logger) that pretrained=None leaves the model random; the
    # weights are loaded next, so the warning would mislead.
    root = logging.getLogger()
    was, root.disabled = root.disabled, True
    try:
        return open_clip.create_model(model_name, pretrained=None,
                                      force_quick_gelu=force_quick_gelu)
    finally:
        root.disabled = was


def clip(name: str, weights: str, published: str = "", model_name: str = "ViT-B-32",
         model_cfg: dict | None = None, force_quick_gelu: bool = True,
         input_size: int | None = None, mean=None, std=None, weights_only: bool = True,
         device: str = "cpu") -> Extractor:
    """open_clip image embeddings (differentiable)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.convert import convert_state_dict

    checkpoint = load_checkpoint(weights, name, FORMAT, published, weights_only)
    model = build_model(model_name, model_cfg, force_quick_gelu)
    state = convert_state_dict(model, state_dict_of(checkpoint))
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    arch = f"open_clip {model_name if not model_cfg else 'CLIP(model_cfg)'}"
    load_into(model, state, weights, name, arch)
    pp = getattr(model.visual, "preprocess_cfg", {})
    size = pp.get("size", model.visual.image_size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size[0] != size[1]:
        raise ValueError(f"{name}: {arch} takes {size[0]}x{size[1]} pictures; only square is supported")
    input_size = input_size or size[0]
    mean = tuple(mean or pp.get("mean", OPENAI_DATASET_MEAN))
    std = tuple(std or pp.get("std", OPENAI_DATASET_STD))
    return pretrained_extractor(
        name, model, weights, model.visual.output_dim, input_size, mean=mean, std=std,
        recipe={"model": model_name, "model_cfg": model_cfg, "quick_gelu": force_quick_gelu},
        cls=ClipExtractor).to(device)
