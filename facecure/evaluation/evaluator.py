"""Protection rate by 1-nearest-neighbour, one big search for all attacker users.

The model trainer classifies a test picture by its nearest train embedding (L2). For attacker
`a`, the gallery is every user's clean train embeddings with `a`'s rows swapped for the
embeddings of `a`'s perturbed pictures. Instead of one search per attacker, all test pictures
are searched once against the clean gallery for their first neighbour. Swapping only changes
`a`'s rows, so a query's new nearest neighbour is the better of (its nearest row that is not
one of `a`'s clean rows) and (its nearest among `a`'s perturbed rows). The first is the stored
neighbour unless that neighbour is `a`'s: only those queries (about `a`'s share of the gallery)
are searched again, for (`a`'s rows + 1) neighbours, one of which is not `a`'s; given the
`attackers` up front, every attacker's such queries go in one search (small searches cost FAISS
far more per query than one big one). The replacement rows are a user's few: their distances
are one matrix product. The same answer as the naive search, at about the price of one search
(`make bench`).

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
                 nonmated_sample: int = 1000, seed: int = 0, attackers=None):
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
        self._query_norms = np.einsum("ij,ij->i", self.queries, self.queries)
        if attackers:
            self._search_without([code[n] for n in attackers if n in code])
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

    def _search_without(self, attackers: list[int]) -> None:
        """For each attacker, the queries whose first neighbour is one of its rows, and their
        nearest row that is not: one search for all of them, (the most rows any of these
        attackers has + 1) neighbours, which always hold one row of another identity."""
        attackers = [a for a in dict.fromkeys(attackers) if a not in self._without]
        if not attackers:
            return
        rows_of = np.bincount(self.gallery_labels, minlength=len(self.names))
        for a in attackers:
            if rows_of[a] == len(self.gallery_labels) and (self.first.label == a).any():
                raise ValueError("the gallery holds the attacker's rows alone: no one to confuse them with")
        which = np.flatnonzero(np.isin(self.first.label, attackers))
        if len(which):
            dist, idx = self._search(self.queries[which], int(rows_of[attackers].max()) + 1)
            other = self.gallery_labels[idx] != self.first.label[which][:, None]
            pick = other.argmax(axis=1)
            q = np.arange(len(which))
            rows = idx[q, pick]
            found = Neighbours(self.gallery_labels[rows], dist[q, pick], rows)
        else:
            found = Neighbours(*(np.zeros(0, t) for t in (int, np.float32, int)))
        owner = self.first.label[which]
        for a in attackers:
            mine = owner == a
            self._without[a] = (which[mine], Neighbours(found.label[mine], found.dist[mine],
                                                        found.row[mine]))

    def _without_attacker(self, a: int) -> tuple[np.ndarray, Neighbours]:
        """The queries whose first neighbour is one of `a`'s rows, and their nearest row that is
        not (searched once per attacker, or with the other attackers given up front)."""
        self._search_without([a])
        return self._without[a]

    def _nearest_replacement(self, replacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each query's squared L2 distance to its nearest replacement row, and that row: exact,
        whatever the index (an approximate one would train on a handful of points, and count
        these trivial searches in its recall), as |q|^2 - 2 q.r + |r|^2, as FAISS computes it."""
        r = np.ascontiguousarray(replacement, dtype=np.float32)
        r_norms = np.einsum("ij,ij->i", r, r)
        dist = np.empty(len(self.queries), np.float32)
        row = np.empty(len(self.queries), np.int64)
        for start in range(0, len(self.queries), 65536):  # a block's products stay small
            q = self.queries[start:start + 65536]
            d = q @ r.T
            d *= -2
            d += r_norms
            i = d.argmin(axis=1)
            row[start:start + len(q)] = i
            dist[start:start + len(q)] = np.maximum(
                d[np.arange(len(q)), i] + self._query_norms[start:start + len(q)], 0)
        return dist, row

    def neighbours_with_swap(self, attacker: str, replacement: np.ndarray) -> Neighbours:
        """Every query's nearest gallery picture once `attacker`'s rows are `replacement` (R, D):
        the attacker's clean rows skipped, the replacement searched apart."""
        a = self.names.index(attacker)
        label, dist, row = self.first.label.copy(), self.first.dist.copy(), self.first.row.copy()
        which, found = self._without_attacker(a)
        label[which], dist[which], row[which] = found.label, found.dist, found.row
        if len(replacement):
            d, i = self._nearest_replacement(replacement)
            closer = d < dist
            label = np.where(closer, a, label)
            dist = np.where(closer, d, dist)
            row = np.where(closer, len(self.gallery_labels) + i, row)
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

