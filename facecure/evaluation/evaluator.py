"""Protection rate by 1-nearest-neighbour, one big search for all attacker users.

The model trainer classifies a test picture by its nearest train embedding (L2). For attacker
`a`, the gallery is every user's clean train embeddings with `a`'s rows swapped for the
embeddings of `a`'s perturbed pictures. Instead of one search per attacker, all test pictures
are searched once against the clean gallery keeping the top k > (most train rows of any
identity) neighbours. Swapping only changes `a`'s rows, so a query's new nearest neighbour is
the better of (its first stored neighbour that is not one of `a`'s clean rows) and (its nearest
among `a`'s perturbed rows): the same answer as the naive search, at the cost of one.

The same top-k gives every query's non-mated search (its first neighbour of another identity:
the gallery without its own rows), which sets the open-set thresholds (evaluation/open_set.py):
the trainer's system, its clean gallery, decides when a search returns anyone at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecure.evaluation.index import FlatL2Index
from facecure.evaluation.open_set import FPIRS, Threshold, fpir_key, threshold_at_fpir, tpir


@dataclass
class AttackerOutcome:
    attacker: str
    protection_rate: float  # top-1 error on the attacker's unperturbed test pictures
    clean_accuracy: float  # top-1 accuracy on every other user's test pictures
    n_test: int
    n_gallery_rows: int  # the attacker's rows in the gallery (perturbed, or clean if unprotected)
    n_perturbed: int = 0  # of those rows, how many are perturbed pictures
    # Open-set protection: 1 - TPIR of the attacker's test pictures at each FPIR's threshold
    # ({"fpir1e-2": ..., "fpir1e-3": ...}); empty where the defense is no nearest neighbour.
    open_set: dict[str, float] = field(default_factory=dict)


@dataclass
class Neighbours:
    """Each query's nearest gallery picture: identity code, squared L2 distance, and row in
    [clean gallery; replacement rows] (replacement row j is len(gallery) + j)."""

    label: np.ndarray
    dist: np.ndarray
    row: np.ndarray


class NearestNeighbourEvaluator:
    """Gallery: train embeddings (G, D) with identity labels; queries: test embeddings (Q, D)."""

    def __init__(self, gallery: np.ndarray, gallery_labels, queries: np.ndarray, query_labels,
                 index: FlatL2Index | None = None, fpirs: tuple[float, ...] = FPIRS):
        self.index = index or FlatL2Index("cpu")
        self.names = sorted(set(gallery_labels) | set(query_labels))
        code = {n: i for i, n in enumerate(self.names)}
        self.gallery_labels = np.array([code[n] for n in gallery_labels])
        self.query_labels = np.array([code[n] for n in query_labels])
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(np.bincount(self.gallery_labels).max()) + 1
        self.dist, self.idx = self.index.search(gallery, self.queries, k)
        self.neighbour_labels = self.gallery_labels[self.idx]
        nonmated = self.nonmated_distances()
        self.thresholds: list[Threshold] = ([threshold_at_fpir(nonmated, f) for f in fpirs]
                                            if len(nonmated) else [])

    def nonmated_distances(self) -> np.ndarray:
        """Each query searched as a non-mated probe (its own identity's rows left out): the
        distance of its nearest row of another identity, from the stored top-k."""
        other = self.neighbour_labels != self.query_labels[:, None]
        found = other.any(axis=1)  # k > any identity's rows: false only for a one-identity gallery
        first = other.argmax(axis=1)
        return self.dist[np.arange(len(first)), first][found]

    def clean_predictions(self) -> np.ndarray:
        return self.neighbour_labels[:, 0]

    def neighbours_with_swap(self, attacker: str, replacement: np.ndarray) -> Neighbours:
        """Every query's nearest gallery picture once `attacker`'s rows are `replacement` (R, D):
        the attacker's clean rows are skipped in the top-k, the replacement searched apart."""
        a = self.names.index(attacker)
        keep = self.neighbour_labels != a
        if not keep.any(axis=1).all():
            raise RuntimeError("top-k too short: some query has only the attacker's rows")
        first = keep.argmax(axis=1)
        q = np.arange(len(first))
        label, dist, row = self.neighbour_labels[q, first], self.dist[q, first], self.idx[q, first]
        if len(replacement):
            d, i = self.index.search(replacement, self.queries, 1)
            closer = d[:, 0] < dist
            label = np.where(closer, a, label)
            dist = np.where(closer, d[:, 0], dist)
            row = np.where(closer, len(self.gallery_labels) + i[:, 0], row)
        return Neighbours(label, dist, row)

    def predictions_with_swap(self, attacker: str, replacement: np.ndarray) -> np.ndarray:
        """Top-1 label of every query once `attacker`'s gallery rows are `replacement` (R, D)."""
        return self.neighbours_with_swap(attacker, replacement).label

    def outcome(self, attacker: str, replacement: np.ndarray) -> AttackerOutcome:
        found = self.neighbours_with_swap(attacker, replacement)
        pred = found.label
        a = self.names.index(attacker)
        mine = self.query_labels == a
        hit = pred[mine] == a
        return AttackerOutcome(
            attacker=attacker,
            protection_rate=float((~hit).mean()),
            clean_accuracy=float((pred[~mine] == self.query_labels[~mine]).mean()),
            n_test=int(mine.sum()), n_gallery_rows=len(replacement),
            open_set={fpir_key(t.fpir): 1 - tpir(hit, found.dist[mine], t) for t in self.thresholds})

