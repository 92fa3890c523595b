"""Adapters for published face extractors, each reading weights the user brings (no downloads).

One module per family, one factory per `conf/extractor/<name>.yaml`:

| factory | configs | format | differentiable |
|---|---|---|---|
| `facenet.inception_resnet_v1` | facenet, webface | facenet-pytorch state dict | yes |
| `vggface.vgg_face` | vggface | converted VGG-16 state dict | yes |
| `arcface.arcface` | arcface | arcface_torch `backbone.pth`, or insightface `.onnx` | .pth yes, .onnx no |
| `magface.magface` | magface | MagFace checkpoint | yes |
| `clip.clip` | clip | open_clip state dict / checkpoint | yes |
| `timm_backbone.timm_backbone` | timm | timm state dict | yes |
| `onnx.onnx_model` | onnx, celeb1m | any `.onnx` (onnxruntime) | no |

Modules are imported lazily by Hydra's `_target_`, so a missing optional library (open_clip,
insightface, facenet-pytorch) only matters to the adapter that needs it.
"""
from facecure.extractors.adapters.weights import (
                                                  IncompatibleWeightsError,
                                                  MissingWeightsError,
                                                  WeightsError,
)

__all__ = ["IncompatibleWeightsError", "MissingWeightsError", "WeightsError"]
