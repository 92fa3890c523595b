"""VGG-Face (Parkhi, Vedaldi, Zisserman, BMVC 2015): VGG-16 up to fc7, a 4096-d descriptor.

The network is torchvision's `vgg16` layout (`features.0` ... `features.28`, `classifier.0`
= fc6, `classifier.3` = fc7); the embedding is fc7 after its ReLU (Caffe's in-place relu7),
L2-normalised, as in the paper. The fc8 identity classifier (`classifier.6`, 2622 classes)
is dropped. Two converted state-dict flavours load:

- torchvision key names, converted from the Oxford Caffe model: Caffe convention, BGR in
  [0, 255] minus the per-channel mean B 93.5940, G 104.7624, R 129.1863, std 1.
- MatConvNet key names (`conv1_1` ... `fc8`, e.g. `vgg_face_dag.pth` from
  robots.ox.ac.uk/~albanie/pytorch-models.html): that conversion takes RGB (its meta mean is
  R 129.186, G 104.762, B 93.594), so `channels: auto` picks RGB for it.

`channels` "auto" (by key names), "BGR" or "RGB"; the mean follows the channel order.
"""
from __future__ import annotations

from torch import nn

from facecure.extractors.adapters.weights import (
    load_checkpoint,
    load_into,
    pretrained_extractor,
    state_dict_of,
)
from facecure.extractors.base import Extractor

FORMAT = ("a VGG-16 state dict with torchvision key names (features.*, classifier.0/3) or "
          "MatConvNet ones (conv1_1 ... fc7, e.g. vgg_face_dag.pth)")
MEAN_BGR = (93.5940, 104.7624, 129.1863)
CONVS_PER_STAGE = (2, 2, 3, 3, 3)


class VGGFace(nn.Module):
    """VGG-16 features + fc6/fc7: (B, 3, 224, 224) normalised -> (B, fc_dim) after relu7.

    `widths` (per stage) and `fc_dim` default to VGG-16's; smaller values make test models.
    """

    def __init__(self, widths=(64, 128, 256, 512, 512), fc_dim: int = 4096):
        super().__init__()
        layers, channels = [], 3
        for width, n_convs in zip(widths, CONVS_PER_STAGE):
            for _ in range(n_convs):
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # the identity at 224, as in torchvision
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, fc_dim), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout())

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def matconvnet_names() -> dict[str, str]:
    """MatConvNet layer name -> torchvision module name (conv1_1 -> features.0, fc6 -> classifier.0)."""
    names, index = {}, 0
    for stage, n_convs in enumerate(CONVS_PER_STAGE, start=1):
        for i in range(1, n_convs + 1):
            names[f"conv{stage}_{i}"] = f"features.{index}"
            index += 2  # conv, relu
        index += 1  # max pool
    return names | {"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}


def to_torchvision(state: dict) -> tuple[dict, bool]:
    """(state with torchvision names, whether it came with MatConvNet names)."""
    names = matconvnet_names()
    if not any(k.split(".")[0] in names for k in state):
        return state, False
    out = {}
    for key, value in state.items():
        layer, _, param = key.partition(".")
        if layer in ("fc6", "fc7", "fc8") and value.ndim == 4:  # fc stored as a 7x7 convolution
            value = value.flatten(1)
        out[f"{names.get(layer, layer)}.{param}"] = value
    return out, True


def vgg_face(name: str, weights: str, published: str = "", channels: str = "auto",
             mean_bgr=MEAN_BGR, input_size: int = 224, widths=(64, 128, 256, 512, 512),
             fc_dim: int = 4096, weights_only: bool = True,
             device: str = "cpu") -> Extractor:
    """VGG-Face extractor (differentiable)."""
    checkpoint = load_checkpoint(weights, name, FORMAT, published, weights_only)
    backbone = VGGFace(widths, fc_dim)
    state, matconvnet = to_torchvision(state_dict_of(checkpoint))
    load_into(backbone, state, weights, name, "VGG-16 (fc7)", ignore=("classifier.6.",))
    if channels == "auto":
        channels = "RGB" if matconvnet else "BGR"
    if channels not in ("RGB", "BGR"):
        raise ValueError(f"{name}: channels must be auto, RGB or BGR, got {channels!r}")
    mean = tuple(mean_bgr) if channels == "BGR" else tuple(mean_bgr)[::-1]
    return pretrained_extractor(
        name, backbone, weights, fc_dim, input_size, mean=mean, std=(1.0,) * 3,
        channels=channels, value_range=255.0,
        recipe={"widths": list(widths), "format": "vggface"}).to(device)
