"""Distractors (`eval.distractors`): identities nobody evaluates, added to every gallery.

The paper's trainer searches among ~500 identities; an engine that searches the web searches
among millions, and newer protections are measured among distractors (OPOM: 10,000 of
MegaFace). Each of `n` distractor identities adds `pictures_per_identity` rows to the gallery
(1 by default, as most of MegaFace's identities have one or two pictures: a million identities
is then a million rows, 2 GB at 512-d). They come from one of two sources:

- `data`: real pictures (a data config: a folder of the user's own, rendered faces for the
  embedded world), embedded with each extractor through the embedding store (embedded once,
  stored) and never mixed with the evaluated identities;
- drawn (no `data`): embeddings drawn to match the real gallery's statistics, for sizes no
  folder here holds. Identity centres from a Gaussian with the mean and covariance of the
  gallery's identity centres; each row adds a residual from the Gaussian of the gallery's
  within-identity residuals; rows are L2-normalised where the extractor's are. Records carry
  `distractors_drawn` so that a figure can label such rows.

Both covariances are used through the data that estimate them (a draw is z @ (X - mean) /
sqrt(m - 1), z standard normal), so a 512-d model never needs a 512 x 512 factorisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from facecure.data.dataset import FaceDataset
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.extractors.base import Extractor

PREFIX = "distractor:"  # distractor labels; never an evaluated identity's name
BLOCK = 1000  # identities drawn from one seed (the unit of nesting, and of the memory peak)


def draw_like(gallery: np.ndarray, labels, n: int, pictures_per_identity: int = 1, seed: int = 0,
              progress: bool = False) -> np.ndarray:
    """(n * pictures_per_identity, D) float32 rows with the gallery's centre and residual
    statistics, identity by identity (rows of one identity are consecutive)."""
    labels = np.asarray(labels)
    names, code = np.unique(labels, return_inverse=True)
    if len(names) < 2:
        raise ValueError("eval.distractors: drawing distractors needs a gallery of at least two "
                         "identities (their centres' spread is what is drawn)")
    centres = np.stack([gallery[code == i].mean(0) for i in range(len(names))]).astype(np.float64)
    residuals = (gallery - centres[code]).astype(np.float64)
    mean = centres.mean(0)
    c_basis = (centres - mean) / np.sqrt(len(centres) - 1)
    r_basis = residuals / np.sqrt(max(len(residuals) - len(names), 1))  # pooled within-identity
    norms = np.linalg.norm(gallery, axis=1)
    normalised = bool(np.allclose(norms, 1, atol=1e-3))
    out = np.empty((n * pictures_per_identity, gallery.shape[1]), np.float32)
    for start in tqdm(range(0, n, BLOCK), desc="draw distractors", unit="block",
                      disable=not progress or n <= 10 * BLOCK, leave=False):
        # Each block of identities from its own seed: the first n of a bigger draw are the
        # same n, so galleries of growing N are nested (a query's neighbour only gets nearer).
        rng = np.random.default_rng([seed, 21, start // BLOCK])
        ids = mean + rng.standard_normal((BLOCK, len(c_basis))) @ c_basis
        rows = np.repeat(ids, pictures_per_identity, axis=0)
        rows += rng.standard_normal((len(rows), len(r_basis))) @ r_basis
        if normalised:
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        m = min(BLOCK, n - start)
        out[start * pictures_per_identity:(start + m) * pictures_per_identity] = \
            rows[:m * pictures_per_identity]
    return out


def distractor_labels(n: int, pictures_per_identity: int = 1) -> np.ndarray:
    return np.repeat(np.array([f"{PREFIX}{i}" for i in range(n)]), pictures_per_identity)


@dataclass
class Distractors:
    """`n` distractor identities for every gallery (settings: conf/config.yaml, eval)."""

    n: int
    pictures_per_identity: int = 1
    data: FaceDataset | None = None  # real pictures; None: drawn
    seed: int = 0

    def __post_init__(self):
        if self.n < 0 or self.pictures_per_identity < 1:
            raise ValueError(f"eval.distractors must be >= 0 and eval.distractor_pictures >= 1, "
                             f"not {self.n} and {self.pictures_per_identity}")
        if self.data is not None:
            have = {i: ps for i, ps in self.data.identities.items()
                    if len(ps) >= self.pictures_per_identity}
            if len(have) < self.n:
                raise ValueError(
                    f"eval.distractors={self.n}: {self.data.name} holds {len(have)} identities "
                    f"with >= {self.pictures_per_identity} pictures (eval.distractor_pictures); "
                    "lower eval.distractors, or leave eval.distractor_data unset to draw them")
            pick = sorted(have)[:self.n]
            self._pictures = [p for i in pick for p in have[i][:self.pictures_per_identity]]

    @property
    def drawn(self) -> bool:
        return self.data is None

    def check_disjoint(self, identities) -> None:
        """Distractors are people nobody evaluates: refuse a folder that holds one of them."""
        if self.data is not None and (shared := sorted(set(identities) & set(self.data.identities))):
            raise ValueError(f"eval.distractor_data ({self.data.name}) holds evaluated identities "
                             f"({', '.join(shared[:5])}...): distractors must be other people")

    def rows(self, extractor: Extractor, gallery: np.ndarray, labels, embeddings: EmbeddingStore,
             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The distractor rows (N, D) for this extractor's gallery, and their labels."""
        if self.data is None:
            rows = draw_like(gallery, labels, self.n, self.pictures_per_identity, self.seed, progress)
            return rows, distractor_labels(self.n, self.pictures_per_identity)
        rows = embeddings.embed(extractor, self._pictures, progress)
        return rows, np.array([PREFIX + p.identity for p in self._pictures])
