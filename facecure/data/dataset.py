"""Faces with identities, the 70/30 split and the choice of attacker users."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facecure.utils.io import picture_key

log = logging.getLogger(__name__)


@dataclass
class Picture:
    """One picture of one identity. `load()` returns uint8 (H, W, 3) RGB."""

    identity: str
    name: str
    key: str  # content hash: the cache key of every store
    _pixels: np.ndarray | None = field(default=None, repr=False)
    _loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    # Real photos: `crop` names the crop kind this picture is (None: a photo as given) and
    # `origin` the photo it was cut from, so a cloak can move to another crop or back.
    origin: Picture | None = field(default=None, repr=False)
    crop: str | None = None
    crop_spec: dict | None = field(default=None, repr=False)
    box: tuple[float, float, float, float] | None = None  # a listed face box (FaceScrub)
    source: str | None = None  # the file it was read from, for messages

    @classmethod
    def from_pixels(cls, identity: str, name: str, pixels: np.ndarray) -> Picture:
        return cls(identity, name, picture_key(pixels), _pixels=pixels)

    def load(self) -> np.ndarray:
        return self._pixels if self._pixels is not None else self._loader()


@dataclass
class FaceDataset:
    """Pictures grouped by identity, plus what was skipped and why."""

    name: str
    identities: dict[str, list[Picture]]
    synthetic: bool
    skipped: list[dict] = field(default_factory=list)  # {"path" or "identity", "reason"}
    # True: the pictures are face crops already (the embedded data, aligned downloads), so no
    # extractor detects or aligns them.
    aligned: bool = False
    min_pictures: int = 2
    notes: list[dict] = field(default_factory=list)  # {"path", "note"}: e.g. several faces

    def __len__(self) -> int:
        return sum(len(p) for p in self.identities.values())


@dataclass
class Split:
    """Per identity: train pictures (posted, scraped) and test pictures (unperturbed)."""

    train: dict[str, list[Picture]]
    test: dict[str, list[Picture]]

    @property
    def identities(self) -> list[str]:
        return list(self.train)


def split_dataset(dataset: FaceDataset, seed: int, train_fraction: float = 0.7) -> Split:
    """Seeded per-identity split; every identity keeps at least one train and one test picture."""
    train, test = {}, {}
    for i, (identity, pictures) in enumerate(sorted(dataset.identities.items())):
        order = np.random.default_rng([seed, 1, i]).permutation(len(pictures))
        n_train = int(np.clip(round(train_fraction * len(pictures)), 1, len(pictures) - 1))
        train[identity] = [pictures[j] for j in order[:n_train]]
        test[identity] = [pictures[j] for j in order[n_train:]]
    return Split(train, test)


def choose_attackers(identities: list[str], n_attackers: int, seed: int,
                     exclude: set[str] | frozenset = frozenset()) -> list[str]:
    """Seeded choice of the users who perturb their pictures (never one of `exclude`)."""
    pool = sorted(set(identities) - set(exclude))
    if n_attackers > len(pool):
        raise ValueError(f"n_attackers={n_attackers} but only {len(pool)} identities are eligible")
    picked = np.random.default_rng([seed, 2]).choice(len(pool), n_attackers, replace=False)
    return [pool[i] for i in sorted(picked)]
