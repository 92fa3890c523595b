"""iResNet, the ArcFace / MagFace backbone, with insightface's parameter names.

A faithful re-implementation of `recognition/arcface_torch/backbones/iresnet.py`
(deepinsight/insightface): same modules, same names, same forward, so an arcface_torch
`backbone.pth` loads with strict=True. MagFace's `models/iresnet.py` (IrvingMeng/MagFace) has
the same layout and names; it differs only in BatchNorm eps (2e-5 instead of 1e-5) and a
Dropout2d(0.4) that is the identity at eval, hence `bn_eps`. fp16 autocast is left out: the
extractor runs in float32.

Input: (B, 3, 112, 112), already normalised by the extractor. Output: (B, num_features), not
L2-normalised (MagFace reads quality from the norm).
"""
from __future__ import annotations

import torch
from torch import nn

# arcface_torch's `get_model` names (backbones/__init__.py) -> blocks per stage.
ARCHS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3],
         "r100": [3, 13, 30, 3], "r200": [6, 26, 60, 6]}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN-conv-BN-PReLU-conv-BN plus the (projected) input; the stride sits on conv2."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, bn_eps: float = 1e-5):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=bn_eps)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    """iResNet: `layers` blocks per stage (widths 64-128-256-512, each stage halves H and W).

    `num_features` is the embedding size (512 in the published models); `input_size` fixes
    the flattened size of the last stage (7 x 7 at 112).
    """

    def __init__(self, layers: list[int], num_features: int = 512, dropout: float = 0.0,
                 bn_eps: float = 1e-5, input_size: int = 112):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"iResNet needs 4 stage depths, got {layers}")
        self.inplanes, self.bn_eps = 64, bn_eps
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=bn_eps)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=bn_eps)
        self.dropout = nn.Dropout(p=dropout)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as arcface_torch: a fixed-scale BN

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=self.bn_eps))
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample, self.bn_eps)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes, bn_eps=self.bn_eps) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet(arch: str = "r100", layers: list[int] | None = None, **kwargs) -> IResNet:
    """An IResNet by arcface_torch name ("r18" ... "r200") or explicit `layers`."""
    if layers is None:
        if arch not in ARCHS:
            raise ValueError(f"unknown iResNet arch {arch!r}; known: {', '.join(ARCHS)}")
        layers = ARCHS[arch]
    return IResNet(list(layers), **kwargs)
