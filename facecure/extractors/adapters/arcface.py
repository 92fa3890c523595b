"""ArcFace (Deng et al., 2018): insightface's iResNet, from a torch `backbone.pth` or an ONNX model.

The file's suffix picks the format:
- `.pth` / `.pt`: an arcface_torch `backbone.pth` (a plain IResNet state dict) loaded into our
  IResNet with strict=True. arcface_torch's `inference.py` feeds RGB scaled
  `(x / 255 - 0.5) / 0.5`, i.e. mean 0.5, std 0.5 on [0, 1].
- `.onnx`: an insightface recognition model (e.g. buffalo_l's `w600k_r50.onnx`) opened by
  insightface's own `model_zoo.get_model`, which returns an `ArcFaceONNX`. Its `get_feat` runs
  `cv2.dnn.blobFromImages(bgr, 1 / input_std, size, (input_mean,) * 3, swapRB=True)`: the
  network sees RGB in [0, 255], minus `input_mean`, over `input_std` (127.5 / 127.5, or 0 / 1
  for the converted MXNet models, which normalise inside the graph). We apply the same values
  to the tensor and run its onnxruntime session: an evaluation-only black box.
"""
from __future__ import annotations

from pathlib import Path

from facecure.extractors.adapters.iresnet import iresnet
from facecure.extractors.adapters.onnx import OnnxExtractor, unreadable_onnx
from facecure.extractors.adapters.weights import (
    IncompatibleWeightsError,
    load_checkpoint,
    load_into,
    pretrained_extractor,
    require_file,
    state_dict_of,
)
from facecure.extractors.base import Extractor

TORCH_FORMAT = "an arcface_torch backbone.pth (torch.save of the IResNet state_dict)"
ONNX_FORMAT = "an insightface ONNX recognition model (e.g. w600k_r50.onnx)"


def arcface(name: str, weights: str, published: str = "", arch: str = "r100",
            layers: list[int] | None = None, num_features: int = 512, input_size: int = 112,
            weights_only: bool = True, providers: list[str] | None = None,
            device: str = "cpu") -> Extractor:
    """ArcFace extractor from `weights` (.pth/.pt: torch, differentiable; .onnx: insightface).

    `arch` ("r18" ... "r200") or `layers` must match a torch file; an ONNX file brings its
    own.
    """
    if Path(weights).suffix == ".onnx":
        return insightface_onnx(name, weights, published, providers).to(device)
    checkpoint = load_checkpoint(weights, name, TORCH_FORMAT, published, weights_only)
    backbone = iresnet(arch, layers, num_features=num_features, input_size=input_size)
    load_into(backbone, state_dict_of(checkpoint), weights, name,
              f"iResNet {layers or arch} (arcface_torch layout)")
    return pretrained_extractor(
        name, backbone, weights, num_features, input_size, mean=(0.5,) * 3, std=(0.5,) * 3,
        recipe={"arch": layers or arch, "format": "arcface_torch"}).to(device)


def insightface_onnx(name: str, weights: str, published: str = "",
                     providers: list[str] | None = None) -> OnnxExtractor:
    """An insightface ONNX recognition model, with ArcFaceONNX's own preprocessing values."""
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    path = require_file(weights, name, ONNX_FORMAT, published)
    try:
        model = get_model(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime / protobuf errors on a truncated or foreign file
        raise unreadable_onnx(path, name, ONNX_FORMAT, e) from None
    if not isinstance(model, ArcFaceONNX):
        raise IncompatibleWeightsError(
            f"{name}: insightface's model_zoo does not take {path} for a recognition model "
            f"(got {type(model).__name__}); recognition models take a square input of at "
            "least 112 pixels, a multiple of 16")
    mean, std = float(model.input_mean), float(model.input_std)
    return OnnxExtractor(name, model.session, path, channels="RGB", value_range=255.0,
                         mean=(mean,) * 3, std=(std,) * 3, input_size=model.input_size[0],
                         layout="NCHW")
