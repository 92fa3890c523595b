"""FaceCure: does face-poisoning protection protect anyone against an adaptive or patient
model trainer? Experiments of Radiya-Dixit, Hong, Carlini and Tramèr (ICLR 2022).

Library use, without Hydra:

    from facecure import create_extractor
    extractor = create_extractor("zoo_softmax")
    embeddings = extractor.embed(pil_images)  # (N, D) float tensor
"""
from facecure import paths as _paths  # noqa: F401  (registers the config resolver)
from facecure.extractors import Extractor, create_extractor, list_extractors

__version__ = "0.1.0"
__all__ = ["Extractor", "__version__", "create_extractor", "list_extractors"]
