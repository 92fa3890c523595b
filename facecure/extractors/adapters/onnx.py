"""Any ONNX face model through onnxruntime: a black box for evaluation, never a surrogate.

The input size and layout (NCHW or NHWC) are read from the model's input shape; channel order,
value range and mean/std are configuration, since ONNX does not record them. `forward` detaches
the batch, runs onnxruntime on the CPU copy and returns a tensor on the input's device: no
gradient flows, hence `differentiable = False`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facecure.extractors.adapters.weights import IncompatibleWeightsError, file_digest, require_file
from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
               "tensor(double)": np.float64}


def open_session(path: str | Path, label: str, expected: str, published: str,
                 providers: list[str] | None = None):
    """An onnxruntime InferenceSession, or one clear error for a missing or unreadable file."""
    import onnxruntime
    path = require_file(path, label, expected, published)
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises InvalidProtobuf / Fail / RuntimeException
        raise unreadable_onnx(path, label, expected, e) from None


def unreadable_onnx(path: Path, label: str, expected: str, error: Exception) -> IncompatibleWeightsError:
    first = " ".join(str(error).split())[:200]
    return IncompatibleWeightsError(
        f"{label}: cannot load {path} as {expected} ({type(error).__name__}: {first}). "
        f"Is the file truncated (an interrupted download?) or not an ONNX model?")


class OnnxExtractor(Extractor):
    """An Extractor whose `features` run an onnxruntime session on the preprocessed batch."""

    def __init__(self, name: str, session: Any, weights: str | Path, *, channels: str = "RGB",
                 value_range: float = 1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 normalize: bool = True, input_size: int | None = None, layout: str = "auto"):
        node = session.get_inputs()[0]
        shape = list(node.shape)
        if len(shape) != 4:
            raise IncompatibleWeightsError(f"{name}: {weights} takes input of shape {shape}; "
                                           "a face extractor takes one 4-d image batch")
        layout = layout if layout != "auto" else ("NHWC" if shape[3] == 3 else "NCHW")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"{name}: layout must be auto, NCHW or NHWC, got {layout!r}")
        fixed = [d for d in (shape[1:3] if layout == "NHWC" else shape[2:4]) if isinstance(d, int)]
        if input_size is None:
            if len(fixed) != 2 or fixed[0] != fixed[1]:
                raise IncompatibleWeightsError(
                    f"{name}: {weights} has input shape {shape} ({layout}); set "
                    "extractor.input_size to its (square) picture size")
            input_size = fixed[0]
        elif any(d != input_size for d in fixed):
            raise ValueError(f"{name}: input_size={input_size} but {weights} takes {shape}")
        fp = fingerprint({"weights": file_digest(weights), "layout": layout,
                          "input_size": input_size, "channels": channels, "mean": list(mean),
                          "std": list(std), "value_range": value_range, "normalize": normalize})
        super().__init__(name, nn.Identity(), 0, input_size, fingerprint=f"{name}-{fp}",
                         mean=tuple(mean), std=tuple(std), channels=channels,
                         value_range=value_range, normalize=normalize, differentiable=False)
        self.session, self.layout = session, layout
        self.input_name, self.dtype = node.name, ONNX_DTYPES.get(node.type, np.float32)
        # Some exports fix the batch at 1: run those one picture at a time.
        self.max_batch = shape[0] if isinstance(shape[0], int) else None
        self.embedding_dim = self._output_dim()

    def _output_dim(self) -> int:
        dims = self.session.get_outputs()[0].shape[1:]
        if dims and all(isinstance(d, int) for d in dims):
            return int(np.prod(dims))
        probe = torch.zeros(1, 3, self.input_size, self.input_size)
        return self.features(self.preprocess(probe)).shape[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, 3, S, S) batch -> (B, D) float32 outputs, on x's device."""
        arr = x.detach().float().cpu().numpy()
        if self.layout == "NHWC":
            arr = arr.transpose(0, 2, 3, 1)
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        step = self.max_batch or len(arr) or 1
        outs = [self.session.run(None, {self.input_name: arr[i:i + step]})[0]
                for i in range(0, len(arr), step)]
        out = np.concatenate(outs).reshape(len(arr), -1).astype(np.float32)
        return torch.from_numpy(out).to(x.device)


def onnx_model(name: str, weights: str, published: str = "", channels: str = "RGB",
               value_range: float = 1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
               normalize: bool = True, input_size: int | None = None, layout: str = "auto",
               providers: list[str] | None = None,
               device: str = "cpu") -> OnnxExtractor:
    """Any ONNX face model. The model sees `(x * value_range - mean) / std` in `channels` order.

    `x` is RGB in [0, 1]; `mean`/`std` are in the model's channel order and value range.
    """
    expected = "an ONNX face-embedding model (.onnx) taking one image batch"
    session = open_session(weights, name, expected, published, providers)
    return OnnxExtractor(name, session, weights, channels=channels, value_range=value_range,
                         mean=mean, std=std, normalize=normalize, input_size=input_size,
                         layout=layout).to(device)
