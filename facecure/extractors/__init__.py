"""Feature extractors g(x): the interface, the registry and the embedded zoo."""
from facecure.extractors.base import Extractor, to_tensor
from facecure.extractors.registry import (
    create_extractor,
    extractor_config,
    instantiate_extractor,
    list_extractors,
)

__all__ = ["Extractor", "create_extractor", "extractor_config", "instantiate_extractor",
           "list_extractors", "to_tensor"]
