"""Any timm backbone as an extractor: pooled features of `timm.create_model(name, num_classes=0)`.

Weights come from a local file in timm's own format: `model.safetensors` /
`pytorch_model.bin` as published on the Hugging Face hub under `timm/<model_name>`, or a timm
training checkpoint (`{'state_dict': ...}`, optional `module.` prefixes). The classifier head
in the file is dropped; every other key must match.

Preprocessing comes from timm's `resolve_data_config` (the model's pretrained_cfg): input size,
mean and std, RGB in [0, 1]. The whole picture is resized to the input size: timm's centre crop
(`crop_pct`) would cut into a face crop. Embedding: the pooled features, L2-normalised.
"""
from __future__ import annotations

import torch

from facecure.extractors.adapters.weights import (
    load_checkpoint,
    load_into,
    pretrained_extractor,
    state_dict_of,
)
from facecure.extractors.base import Extractor

FORMAT = "a timm state dict for this model (model.safetensors, pytorch_model.bin or a checkpoint)"


def timm_backbone(name: str, weights: str, model_name: str, published: str = "",
                  input_size: int | None = None, mean=None, std=None,
                  weights_only: bool = True,
                  device: str = "cpu") -> Extractor:
    """timm `model_name` with local `weights` (differentiable)."""
    import timm
    from timm.data import resolve_data_config

    checkpoint = load_checkpoint(weights, name, FORMAT, published, weights_only)
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except RuntimeError as e:  # timm's "Unknown model" error
        raise ValueError(f"{name}: {e}") from None
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    load_into(model, state_dict_of(checkpoint), weights, name, f"timm {model_name}",
              ignore=tuple(f"{h}." for h in heads))
    data = resolve_data_config({}, model=model)
    _, height, width = data["input_size"]
    if height != width and input_size is None:
        raise ValueError(f"{name}: timm {model_name} takes {height}x{width}; set extractor.input_size")
    input_size = input_size or height
    with torch.no_grad():
        dim = model.eval()(torch.zeros(1, 3, input_size, input_size)).shape[1]
    return pretrained_extractor(
        name, model, weights, dim, input_size, mean=tuple(mean or data["mean"]),
        std=tuple(std or data["std"]), recipe={"model": model_name}).to(device)
