"""Protection rate by 1-nearest-neighbour, one big search for all attacker users.

The model trainer classifies a test picture by its nearest train embedding (L2). For attacker
`a`, the gallery is every user's clean train embeddings with `a`'s rows swapped for the
embeddings of `a`'s perturbed pictures. Instead of one search per attacker, all test pictures
are searched once against the clean gallery for their first neighbour. Swapping only changes
`a`'s rows, so a query's new nearest neighbour is the better of (its nearest row that is not
one of `a`'s clean rows) and (its nearest among `a`'s perturbed rows). The first is the stored
neighbour unless that neighbour is `a`'s: only those queries (about `a`'s share of the gallery)
are searched again, every attacker's at once (small searches cost FAISS far more per query than
one big one; on the CPU with the flat index, one blocked product without the owner's rows). The
replacement rows are a user's few: given every attacker's at once (`neighbours_with_swaps`,
`outcomes`), their distances are one matrix product. The same answer as the naive search, at
about the price of one search (`make bench`).

Open set: a sample of the queries (`nonmated_sample`, seeded; all of them in small data) is
searched as non-mated probes (the gallery without the query's own identity's rows, read from
a top-k longer than any identity's rows: the same search gives the sample's first neighbours,
so no query is searched twice), which sets the thresholds at each FPIR
(evaluation/open_set.py): the trainer's system, its clean gallery, decides when a search
returns anyone at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecure.evaluation.index import FlatL2Index
from facecure.evaluation.open_set import FPIRS, Threshold, fpir_key, threshold_at_fpir, tpir

BLOCK_FLOATS = 1 << 26  # the products' blocks: 256 MB of float32 at most


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
        # The open-set sample's queries are searched once, for a top-k that gives both their
        # first neighbour and their non-mated distance: no query is searched twice (a second
        # pass over a 10% sample had cost 10% of a search at a million rows).
        pick = self._nonmated_pick(nonmated_sample, seed)
        rest = np.setdiff1d(np.arange(len(self.queries)), pick)
        idx, dist = np.zeros(len(self.queries), np.int64), np.zeros(len(self.queries), np.float32)
        if len(rest):
            d, i = self._search(self.queries[rest], 1)
            dist[rest], idx[rest] = d[:, 0], i[:, 0]
        nonmated = np.zeros(0, np.float32)
        if len(pick):
            k = int(np.bincount(self.gallery_labels).max()) + 1  # more than any identity's rows
            d, i = self._search(self.queries[pick], k)
            dist[pick], idx[pick] = d[:, 0], i[:, 0]
            nonmated = self._nonmated(pick, d, i)
        self.first = Neighbours(self.gallery_labels[idx], dist, idx)
        self._without: dict[int, tuple[np.ndarray, Neighbours]] = {}  # attacker -> re-searched
        self._query_norms = np.einsum("ij,ij->i", self.queries, self.queries)
        self._gallery_norms = None  # made at the first exact re-search
        if attackers:
            self._search_without([code[n] for n in attackers if n in code])
        self.thresholds: list[Threshold] = ([threshold_at_fpir(nonmated, f) for f in fpirs]
                                            if len(nonmated) else [])

    def _nonmated_pick(self, n: int, seed: int) -> np.ndarray:
        """The queries searched as non-mated probes: up to `n`, a seeded sample."""
        if n <= 0 or len(self.queries) == 0 or len(set(self.gallery_labels.tolist())) < 2:
            return np.zeros(0, np.int64)
        pick = np.arange(len(self.queries))
        if len(pick) > n:
            pick = np.sort(np.random.default_rng([seed, 5]).choice(len(pick), n, replace=False))
        return pick

    def _nonmated(self, pick: np.ndarray, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """From the `pick` queries' top-k: each one's distance to its nearest row of another
        identity (its own identity's rows left out)."""
        other = self.gallery_labels[idx] != self.query_labels[pick][:, None]
        found = other.any(axis=1)  # false only where the top-k was cut (an approximate index)
        return dist[np.arange(len(pick)), other.argmax(axis=1)][found]

    def nonmated_distances(self, n: int, seed: int) -> np.ndarray:
        """Up to `n` queries (seeded sample) searched as non-mated probes, their own identity's
        rows left out: the distance of each one's nearest row of another identity."""
        pick = self._nonmated_pick(n, seed)
        if not len(pick):
            return np.zeros(0, np.float32)
        dist, idx = self._search(self.queries[pick], int(np.bincount(self.gallery_labels).max()) + 1)
        return self._nonmated(pick, dist, idx)

    def clean_predictions(self) -> np.ndarray:
        return self.first.label

    def _search_without(self, attackers: list[int]) -> None:
        """For each attacker, the queries whose first neighbour is one of its rows, and their
        nearest row that is not: all of them at once (one search or one blocked product)."""
        attackers = [a for a in dict.fromkeys(attackers) if a not in self._without]
        if not attackers:
            return
        rows_of = np.bincount(self.gallery_labels, minlength=len(self.names))
        for a in attackers:
            if rows_of[a] == len(self.gallery_labels) and (self.first.label == a).any():
                raise ValueError("the gallery holds the attacker's rows alone: no one to confuse them with")
        which = np.flatnonzero(np.isin(self.first.label, attackers))
        owner = self.first.label[which]
        if not len(which):
            found = Neighbours(*(np.zeros(0, t) for t in (int, np.float32, int)))
        elif self.index.kind == "flat" and not self.index.use_gpu:
            found = self._exact_without(which, owner)
        else:  # (the most rows any of these attackers has + 1) always hold another's row
            dist, idx = self._search(self.queries[which], int(rows_of[attackers].max()) + 1)
            pick = (self.gallery_labels[idx] != owner[:, None]).argmax(axis=1)
            q = np.arange(len(which))
            rows = idx[q, pick]
            found = Neighbours(self.gallery_labels[rows], dist[q, pick], rows)
        for a in attackers:
            mine = owner == a
            self._without[a] = (which[mine], Neighbours(found.label[mine], found.dist[mine],
                                                        found.row[mine]))

    def _exact_without(self, which: np.ndarray, owner: np.ndarray) -> Neighbours:
        """Exact nearest row of each query in `which` among the rows `owner` does not own, as
        one blocked product on the CPU: FAISS pays a top-k heap per query for the same answer
        (0.15 s against 0.21 s for 614 queries x 37.5k rows, `make bench`'s evaluator)."""
        if self._gallery_norms is None:
            self._gallery_norms = np.einsum("ij,ij->i", self.gallery, self.gallery)
        rows, dist = np.empty(len(which), np.int64), np.empty(len(which), np.float32)
        block = max(1, BLOCK_FLOATS // len(self.gallery))
        columns = {a: np.flatnonzero(self.gallery_labels == a) for a in np.unique(owner)}
        for start in range(0, len(which), block):
            own = owner[start:start + block]
            d = self.queries[which[start:start + block]] @ self.gallery.T
            d *= -2
            d += self._gallery_norms
            for a in np.unique(own):  # an attacker's own rows are out of its search
                d[np.ix_(own == a, columns[a])] = np.inf
            i = d.argmin(axis=1)
            rows[start:start + block] = i
            dist[start:start + block] = d[np.arange(len(d)), i] + self._query_norms[which[start:start + block]]
        return Neighbours(self.gallery_labels[rows], np.maximum(dist, 0), rows)

    def _without_attacker(self, a: int) -> tuple[np.ndarray, Neighbours]:
        """The queries whose first neighbour is one of `a`'s rows, and their nearest row that is
        not (searched once per attacker, or with the other attackers given up front)."""
        self._search_without([a])
        return self._without[a]

    def _nearest_replacements(self, replacements: list[np.ndarray]) -> np.ndarray:
        """(Q, len(replacements)): each query's squared L2 distance to its nearest row of each
        replacement (none empty). Exact, whatever the index (an approximate one would train on
        a handful of points, and count these trivial searches in its recall), and one product
        for all of them: q.r - |r|^2 / 2 in the product itself (q padded with a 1), its maximum
        over each replacement's columns, |q|^2 - 2 max = min |q - r|^2."""
        r = np.vstack(replacements).astype(np.float32, copy=False)
        scores = np.hstack([r, -0.5 * np.einsum("ij,ij->i", r, r)[:, None]]).T.copy()
        starts = np.cumsum([0] + [len(x) for x in replacements[:-1]])
        best = np.empty((len(self.queries), len(replacements)), np.float32)
        block = max(1, BLOCK_FLOATS // 16 // len(r))  # a block's products stay in cache
        ones = np.ones((min(block, len(self.queries)), 1), np.float32)
        for start in range(0, len(self.queries), block):
            q = self.queries[start:start + block]
            d = np.hstack([q, ones[:len(q)]]) @ scores
            best[start:start + len(q)] = np.maximum.reduceat(d, starts, axis=1)
        return np.maximum(self._query_norms[:, None] - 2 * best, 0)

    def _replacement_rows(self, queries: np.ndarray, replacement: np.ndarray) -> np.ndarray:
        """Which of `replacement`'s rows is nearest each of `queries` (the few it wins)."""
        r = np.asarray(replacement, np.float32)
        d = self.queries[queries] @ r.T
        d *= -2
        d += np.einsum("ij,ij->i", r, r)
        return d.argmin(axis=1) if len(queries) else np.zeros(0, np.int64)

    def neighbours_with_swaps(self, swaps: dict[str, np.ndarray]) -> dict[str, Neighbours]:
        """For each attacker, every query's nearest gallery picture once that attacker's rows
        (alone) are its replacement (R, D): its clean rows skipped, the replacements searched
        apart, all of them in one product."""
        codes = {attacker: self.names.index(attacker) for attacker in swaps}
        self._search_without(list(codes.values()))
        posting = [a for a, r in swaps.items() if len(r)]
        nearest = self._nearest_replacements([swaps[a] for a in posting]) if posting else None
        out = {}
        for attacker, replacement in swaps.items():
            a = codes[attacker]
            label, dist, row = self.first.label.copy(), self.first.dist.copy(), self.first.row.copy()
            which, found = self._without[a]
            label[which], dist[which], row[which] = found.label, found.dist, found.row
            if len(replacement):
                d = nearest[:, posting.index(attacker)]
                closer = np.flatnonzero(d < dist)
                label[closer], dist[closer] = a, d[closer]
                row[closer] = len(self.gallery_labels) + self._replacement_rows(closer, replacement)
            out[attacker] = Neighbours(label, dist, row)
        return out

    def neighbours_with_swap(self, attacker: str, replacement: np.ndarray) -> Neighbours:
        """Every query's nearest gallery picture once `attacker`'s rows are `replacement` (R, D)."""
        return self.neighbours_with_swaps({attacker: replacement})[attacker]

    def predictions_with_swap(self, attacker: str, replacement: np.ndarray) -> np.ndarray:
        """Top-1 label of every query once `attacker`'s gallery rows are `replacement` (R, D)."""
        return self.neighbours_with_swap(attacker, replacement).label

    def outcomes(self, swaps: dict[str, np.ndarray]) -> dict[str, AttackerOutcome]:
        """Each attacker's outcome with their rows (alone) swapped for their replacement."""
        return {a: self._outcome(a, len(swaps[a]), found)
                for a, found in self.neighbours_with_swaps(swaps).items()}

    def outcome(self, attacker: str, replacement: np.ndarray) -> AttackerOutcome:
        return self.outcomes({attacker: replacement})[attacker]

    def _outcome(self, attacker: str, n_rows: int, found: Neighbours) -> AttackerOutcome:
        pred = found.label
        a = self.names.index(attacker)
        mine = self.query_labels == a
        hit = pred[mine] == a
        return AttackerOutcome(
            attacker=attacker,
            protection_rate=float((~hit).mean()),
            clean_accuracy=float((pred[~mine] == self.query_labels[~mine]).mean()),
            n_test=int(mine.sum()), n_gallery_rows=n_rows,
            open_set={fpir_key(t.fpir): 1 - tpir(hit, found.dist[mine], t) for t in self.thresholds})
