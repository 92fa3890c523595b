"""Protection rate by 1-nearest-neighbour, one big search for all attacker users.

The model trainer classifies a test picture by its nearest train embedding (L2). For attacker
`a`, the gallery is every user's clean train embeddings with `a`'s rows swapped for the
embeddings of `a`'s perturbed pictures. Instead of one search per attacker, all test pictures
are searched once against the clean gallery for their first neighbour. Swapping only changes
`a`'s rows, so a query's new nearest neighbour is the better of (its nearest row that is not
one of `a`'s clean rows) and (its nearest among `a`'s perturbed rows). The first is the stored
neighbour unless that neighbour is `a`'s: only those queries (about `a`'s share of the gallery)
are searched again, for (`a`'s rows + 1) neighbours, one of which is not `a`'s. The same answer
as the naive search, at about the price of one search (`make bench`).

Open set: a sample of the queries (`nonmated_sample`, seeded; all of them in small data) is
searched as non-mated probes (the gallery without the query's own identity's rows, read from
a top-k longer than any identity's rows), which sets the thresholds at each FPIR
(evaluation/open_set.py): the trainer's system, its clean gallery, decides when a search
returns anyone at all.
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
                 index: FlatL2Index | None = None, fpirs: tuple[float, ...] = FPIRS,
                 nonmated_sample: int = 1000, seed: int = 0):
        self.index = index or FlatL2Index("cpu")
        self.names = sorted(set(gallery_labels) | set(query_labels))
        code = {n: i for i, n in enumerate(self.names)}
        self.gallery_labels = np.array([code[n] for n in gallery_labels])
        self.query_labels = np.array([code[n] for n in query_labels])
        self.gallery = np.ascontiguousarray(gallery, dtype=np.float32)
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self._search = self.index.prepared(self.gallery)  # built once, searched several times
        dist, idx = self._search(self.queries, 1)
        self.first = Neighbours(self.gallery_labels[idx[:, 0]], dist[:, 0], idx[:, 0])
        self._without: dict[int, tuple[np.ndarray, Neighbours]] = {}  # attacker -> re-searched
        nonmated = self.nonmated_distances(nonmated_sample, seed)
        self.thresholds: list[Threshold] = ([threshold_at_fpir(nonmated, f) for f in fpirs]
                                            if len(nonmated) else [])

    def nonmated_distances(self, n: int, seed: int) -> np.ndarray:
        """Up to `n` queries (seeded sample) searched as non-mated probes, their own identity's
        rows left out: the distance of each one's nearest row of another identity."""
        if n <= 0 or len(self.queries) == 0 or len(set(self.gallery_labels.tolist())) < 2:
            return np.zeros(0, np.float32)
        pick = np.arange(len(self.queries))
        if len(pick) > n:
            pick = np.sort(np.random.default_rng([seed, 5]).choice(len(pick), n, replace=False))
        k = int(np.bincount(self.gallery_labels).max()) + 1  # more than any identity's rows
        dist, idx = self._search(self.queries[pick], k)
        other = self.gallery_labels[idx] != self.query_labels[pick][:, None]
        found = other.any(axis=1)  # false only where the top-k was cut (an approximate index)
        return dist[np.arange(len(pick)), other.argmax(axis=1)][found]

    def clean_predictions(self) -> np.ndarray:
        return self.first.label

    def _without_attacker(self, a: int) -> tuple[np.ndarray, Neighbours]:
        """The queries whose first neighbour is one of `a`'s rows, and their nearest row that is
        not (searched once per attacker: a's rows + 1 neighbours always hold one)."""
        if a not in self._without:
            which = np.flatnonzero(self.first.label == a)
            n_a = int((self.gallery_labels == a).sum())
            if len(which) and n_a == len(self.gallery_labels):
                raise ValueError("the gallery holds the attacker's rows alone: no one to confuse them with")
            if len(which):
                dist, idx = self._search(self.queries[which], n_a + 1)
                other = self.gallery_labels[idx] != a
                pick = other.argmax(axis=1)
                q = np.arange(len(which))
                rows = idx[q, pick]
                found = Neighbours(self.gallery_labels[rows], dist[q, pick], rows)
            else:
                found = Neighbours(*(np.zeros(0, t) for t in (int, np.float32, int)))
            self._without[a] = (which, found)
        return self._without[a]

    def neighbours_with_swap(self, attacker: str, replacement: np.ndarray) -> Neighbours:
        """Every query's nearest gallery picture once `attacker`'s rows are `replacement` (R, D):
        the attacker's clean rows skipped, the replacement searched apart."""
        a = self.names.index(attacker)
        label, dist, row = self.first.label.copy(), self.first.dist.copy(), self.first.row.copy()
        which, found = self._without_attacker(a)
        label[which], dist[which], row[which] = found.label, found.dist, found.row
        if len(replacement):
            # A user's few rows: searched exactly, whatever the index (an approximate one would
            # train on a handful of points, and count these trivial searches in its recall).
            d, i = FlatL2Index.build(self.index, replacement).search(self.queries, 1)
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

