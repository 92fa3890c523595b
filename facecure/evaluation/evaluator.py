"""Protection rate by 1-nearest-neighbour, one big search for all attacker users.

The model trainer classifies a test picture by its nearest train embedding (L2). For attacker
`a`, the gallery is every user's clean train embeddings with `a`'s rows swapped for the
embeddings of `a`'s perturbed pictures. Instead of one search per attacker, all test pictures
are searched once against the clean gallery keeping the top k > (most train rows of any
identity) neighbours. Swapping only changes `a`'s rows, so a query's new nearest neighbour is
the better of (its first stored neighbour that is not one of `a`'s clean rows) and (its nearest
among `a`'s perturbed rows): the same answer as the naive search, at the cost of one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecure.evaluation.index import FlatL2Index


@dataclass
class AttackerOutcome:
    attacker: str
    protection_rate: float  # top-1 error on the attacker's unperturbed test pictures
    clean_accuracy: float  # top-1 accuracy on every other user's test pictures
    n_test: int
    n_gallery_rows: int  # the attacker's rows in the gallery (perturbed, or clean if unprotected)
    n_perturbed: int = 0  # of those rows, how many are perturbed pictures


class NearestNeighbourEvaluator:
    """Gallery: train embeddings (G, D) with identity labels; queries: test embeddings (Q, D)."""

    def __init__(self, gallery: np.ndarray, gallery_labels, queries: np.ndarray, query_labels,
                 index: FlatL2Index | None = None):
        self.index = index or FlatL2Index("cpu")
        self.names = sorted(set(gallery_labels) | set(query_labels))
        code = {n: i for i, n in enumerate(self.names)}
        self.gallery_labels = np.array([code[n] for n in gallery_labels])
        self.query_labels = np.array([code[n] for n in query_labels])
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(np.bincount(self.gallery_labels).max()) + 1
        self.dist, self.idx = self.index.search(gallery, self.queries, k)
        self.neighbour_labels = self.gallery_labels[self.idx]

    def clean_predictions(self) -> np.ndarray:
        return self.neighbour_labels[:, 0]

    def predictions_with_swap(self, attacker: str, replacement: np.ndarray) -> np.ndarray:
        """Top-1 label of every query once `attacker`'s gallery rows are `replacement` (R, D)."""
        a = self.names.index(attacker)
        keep = self.neighbour_labels != a
        if not keep.any(axis=1).all():
            raise RuntimeError("top-k too short: some query has only the attacker's rows")
        first = keep.argmax(axis=1)
        rows = np.arange(len(first))
        best_dist, best_label = self.dist[rows, first], self.neighbour_labels[rows, first]
        if len(replacement):
            queries_dist, _ = self.index.search(replacement, self.queries, 1)
            closer = queries_dist[:, 0] < best_dist
            best_label = np.where(closer, a, best_label)
        return best_label

    def outcome(self, attacker: str, replacement: np.ndarray) -> AttackerOutcome:
        pred = self.predictions_with_swap(attacker, replacement)
        a = self.names.index(attacker)
        mine = self.query_labels == a
        return AttackerOutcome(
            attacker=attacker,
            protection_rate=float((pred[mine] != a).mean()),
            clean_accuracy=float((pred[~mine] == self.query_labels[~mine]).mean()),
            n_test=int(mine.sum()), n_gallery_rows=len(replacement))

