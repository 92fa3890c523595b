"""Architectures of the embedded zoo: small networks that train on a CPU in minutes."""
from __future__ import annotations

from torch import nn


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class ZooCNN(nn.Module):
    """A VGG-style CNN: a strided stem, four stages of two 3x3 convs, global average pool, linear embedding."""

    def __init__(self, embedding_dim: int = 128, widths=(32, 64, 128, 256), stem: int = 24):
        super().__init__()
        # A stride-2 stem halves the picture first: the stages then run at 32x32 and below for
        # a 64x64 input, which keeps a training epoch on two CPU cores under a minute.
        stages = [nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                nn.ReLU(inplace=True))]
        c_in = stem
        for i, width in enumerate(widths):
            stages.append(_block(c_in, width, 1 if i == 0 else 2))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(c_in, embedding_dim),
                                       nn.BatchNorm1d(embedding_dim))

    def forward(self, x):
        return self.embedding(self.pool(self.stages(x)))


class _Residual(nn.Module):
    """IR block (as in insightface's iResNet): BN-conv-BN-PReLU-conv-BN plus a shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
            nn.PReLU(c_out), nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class ZooIResNet(nn.Module):
    """A small improved ResNet (the IR family of ArcFace / MagFace): a strided stem, one IR
    block per stage, then BN-dropout-flatten-linear-BN to the embedding, as iResNet ends."""

    def __init__(self, embedding_dim: int = 128, widths=(32, 64, 96, 160), stem: int = 24):
        super().__init__()
        layers = [nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)]
        c_in = stem
        for width in widths:
            layers.append(_Residual(c_in, width, 2))
            c_in = width
        self.stages = nn.Sequential(*layers)
        # iResNet flattens its last 7x7 map (position matters for faces); a 2x2 pool keeps
        # that at any input size.
        self.embedding = nn.Sequential(nn.BatchNorm2d(c_in), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                       nn.Linear(c_in * 4, embedding_dim),
                                       nn.BatchNorm1d(embedding_dim))

    def forward(self, x):
        return self.embedding(self.stages(x))


ARCHITECTURES = {"cnn": ZooCNN, "iresnet": ZooIResNet}
