"""Clean 1-NN accuracy of an extractor on the evaluation identities (the zoo's sanity check)."""
from __future__ import annotations

from facecure.data.dataset import FaceDataset, split_dataset
from facecure.evaluation.evaluator import NearestNeighbourEvaluator
from facecure.evaluation.index import FlatL2Index
from facecure.extractors.base import Extractor


def clean_accuracy(extractor: Extractor, dataset: FaceDataset, seed: int = 0) -> float:
    """Top-1 accuracy of the 1-NN classifier over clean train embeddings, on clean test ones."""
    split = split_dataset(dataset, seed)
    train = [p for i in split.identities for p in split.train[i]]
    test = [p for i in split.identities for p in split.test[i]]
    gallery = extractor.embed([p.load() for p in train]).numpy()
    queries = extractor.embed([p.load() for p in test]).numpy()
    ev = NearestNeighbourEvaluator(gallery, [p.identity for p in train], queries,
                                   [p.identity for p in test], FlatL2Index("cpu"))
    return float((ev.clean_predictions() == ev.query_labels).mean())
