"""MagFace (Meng et al., 2021): an iResNet whose embedding norm encodes face quality.

Weights: a MagFace training checkpoint, `torch.load(path)['state_dict']`, whose backbone keys
carry `features.module.` (DataParallel inside the builder) or `module.features.` (DDP outside)
prefixes; MagFace's own `clean_dict_inf` strips exactly these. Other keys (the MagLinear head
`fc.weight`, optimiser state) are not part of the extractor and are dropped.

Preprocessing, from MagFace's `inference/gen_feat.py`: pictures read with `cv2.imread` (BGR),
`transforms.ToTensor()` (x / 255) and `Normalize(mean=[0, 0, 0], std=[1, 1, 1])`: BGR in
[0, 1], no centring, 112 x 112. MagFace's iResNet uses BatchNorm eps 2e-5.

The 512-d output is L2-normalised (`normalize`, on by default) for 1-NN matching; set
`normalize=false` to keep the magnitude, MagFace's quality score.
"""
from __future__ import annotations

from facecure.extractors.adapters.iresnet import iresnet
from facecure.extractors.adapters.weights import (
    load_checkpoint,
    load_into,
    pretrained_extractor,
    state_dict_of,
)
from facecure.extractors.base import Extractor

FORMAT = "a MagFace checkpoint (a dict with 'state_dict', keys 'features.module.*' or 'module.features.*')"
PREFIXES = ("features.module.", "module.features.")


def backbone_state(checkpoint) -> dict:
    """The iResNet state dict inside a MagFace checkpoint (prefixes stripped, head dropped)."""
    state = state_dict_of(checkpoint, keys=("state_dict",), strip_module=False)
    found = {k.removeprefix(p): v for k, v in state.items() for p in PREFIXES if k.startswith(p)}
    # A bare iResNet state dict (already converted) is taken as it is.
    return found or state_dict_of(state)


def magface(name: str, weights: str, published: str = "", arch: str = "r100",
            layers: list[int] | None = None, num_features: int = 512, input_size: int = 112,
            normalize: bool = True, weights_only: bool = True,
            device: str = "cpu") -> Extractor:
    """MagFace extractor (differentiable)."""
    checkpoint = load_checkpoint(weights, name, FORMAT, published, weights_only)
    backbone = iresnet(arch, layers, num_features=num_features, input_size=input_size,
                       bn_eps=2e-5)
    load_into(backbone, backbone_state(checkpoint), weights, name,
              f"MagFace iResNet {layers or arch}")
    return pretrained_extractor(
        name, backbone, weights, num_features, input_size, mean=(0.0,) * 3, std=(1.0,) * 3,
        channels="BGR", normalize=normalize,
        recipe={"arch": layers or arch, "format": "magface"}).to(device)
