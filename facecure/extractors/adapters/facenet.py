"""FaceNet-style InceptionResnetV1 from facenet-pytorch (timesler/facenet-pytorch).

Two published state dicts fit it: `20180402-114759-vggface2.pt` (trained on VGGFace2: the
paper's FaceNet) and `20180408-102900-casia-webface.pt` (CASIA-WebFace: the paper's WebFace,
Fawkes v0.3's surrogate). Both carry the classifier head `logits.*`, which the extractor drops;
every other key must match (strict), so a file of another architecture fails clearly.

Preprocessing, facenet-pytorch's `fixed_image_standardization`: RGB in [0, 255],
`(x - 127.5) / 128`, 160 x 160 (MTCNN's crop size). Output: 512-d, L2-normalised.
"""
from __future__ import annotations

from facecure.extractors.adapters.weights import (
    load_checkpoint,
    load_into,
    pretrained_extractor,
    state_dict_of,
)
from facecure.extractors.base import Extractor

FORMAT = "a facenet-pytorch InceptionResnetV1 state dict (as in its GitHub release assets)"


def inception_resnet_v1(name: str, weights: str, published: str = "", input_size: int = 160,
                        weights_only: bool = True,
                        device: str = "cpu") -> Extractor:
    """InceptionResnetV1 extractor (differentiable)."""
    try:  # the submodule: facenet_pytorch/__init__ also imports MTCNN and its dependencies
        from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1
    except ImportError as e:
        raise ImportError(f"{name} needs facenet-pytorch (pip install --no-deps "
                          f"facenet-pytorch): {e}") from e
    checkpoint = load_checkpoint(weights, name, FORMAT, published, weights_only)
    backbone = InceptionResnetV1(pretrained=None, classify=False)
    load_into(backbone, state_dict_of(checkpoint), weights, name,
              "facenet-pytorch InceptionResnetV1", ignore=("logits.",))
    return pretrained_extractor(
        name, backbone, weights, 512, input_size, mean=(127.5,) * 3, std=(128.0,) * 3,
        value_range=255.0, recipe={"format": "facenet-pytorch"}).to(device)
