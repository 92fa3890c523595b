"""The paper's core measurement, as a plain function over objects (no Hydra).

Attacker users perturb their train pictures with `attack`; the model trainer embeds everything
with `extractor` and classifies each test picture by its nearest train picture.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecure.attacks.base import Attack
from facecure.attacks.mixed import MixedAttack
from facecure.attacks.store import PerturbedStore
from facecure.data.dataset import Picture, Split
from facecure.evaluation.distractors import Distractors
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.evaluation.evaluator import AttackerOutcome, NearestNeighbourEvaluator
from facecure.evaluation.index import FlatL2Index
from facecure.evaluation.open_set import Threshold
from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint


@dataclass
class ProtectionResult:
    outcomes: list[AttackerOutcome]  # with the attack
    clean_outcomes: list[AttackerOutcome]  # the same attackers posting clean pictures
    budgets: dict[str, list[dict]] = field(default_factory=dict)  # attacker -> per picture
    thresholds: list[Threshold] = field(default_factory=list)  # the open-set operating points


def unprotected_count(unprotected: float, n_pictures: int) -> int:
    """`attack.unprotected`: a count (>= 1) or a fraction (< 1) of a user's train pictures."""
    if unprotected < 0:
        raise ValueError(f"attack.unprotected must be >= 0, not {unprotected}")
    n = int(round(unprotected * n_pictures)) if unprotected < 1 else int(unprotected)
    return min(n, n_pictures)


def leave_clean(pictures: list[Picture], unprotected: float, seed: int) -> tuple[list, list]:
    """Seeded split of one user's train pictures into (left clean, to perturb)."""
    if not pictures:
        return [], []
    rng = np.random.default_rng([seed, 3, int(fingerprint(pictures[0].identity, 8), 16)])
    order = rng.permutation(len(pictures))
    clean = {int(i) for i in order[:unprotected_count(unprotected, len(pictures))]}
    return ([p for i, p in enumerate(pictures) if i in clean],
            [p for i, p in enumerate(pictures) if i not in clean])


def perturb_users(attack: Attack, pictures: list[Picture], store: PerturbedStore,
                  progress: bool) -> tuple[list[Picture], list[dict]]:
    """Perturbed twins of `pictures` (and budgets); a mixed attack splits each user's share."""
    if not isinstance(attack, MixedAttack):
        return store.perturb_pictures(attack, pictures, progress)
    users: dict[str, list[Picture]] = {}
    for p in pictures:
        users.setdefault(p.identity, []).append(p)
    parts = [attack.split(pics) for pics in users.values()]
    # Either part may itself be mixed (fawkes_v10_modes: low, then mid / high).
    first, b1 = perturb_users(attack.first, [p for a, _ in parts for p in a], store, progress)
    second, b2 = perturb_users(attack.second, [p for _, b in parts for p in b], store, progress)
    return first + second, b1 + b2


@dataclass
class Posted:
    """What the attackers post: each one's train pictures, all but `unprotected` perturbed."""

    pictures: dict[str, list[Picture]]  # attacker -> left clean, then perturbed twins
    budgets: dict[str, list[dict]]  # attacker -> budget of each perturbed picture

    def n_perturbed(self, attacker: str) -> int:
        return len(self.budgets[attacker])

    def flat(self) -> tuple[list[Picture], np.ndarray]:
        """Every posted picture, and its owner, in one list (to embed them in one call)."""
        pictures = [p for pics in self.pictures.values() for p in pics]
        return pictures, np.array([p.identity for p in pictures])


def post_pictures(split: Split, attackers: list[str], attack: Attack, store: PerturbedStore,
                  unprotected: float = 0, seed: int = 0, progress: bool = True) -> Posted:
    """The attackers perturb their train pictures (stored, never attacked twice)."""
    kept, attacked = {}, []
    for a in attackers:
        kept[a], rest = leave_clean(split.train[a], unprotected, seed)
        attacked += rest
    cloaked, budgets = perturb_users(attack, attacked, store, progress)
    posted = Posted({a: list(kept[a]) for a in attackers}, {a: [] for a in attackers})
    for p, b in zip(cloaked, budgets):
        posted.pictures[p.identity].append(p)
        posted.budgets[p.identity].append(b)
    return posted


def measure_protection(split: Split, attackers: list[str], extractor: Extractor, attack: Attack,
                       embeddings: EmbeddingStore, perturbed: PerturbedStore,
                       index: FlatL2Index | None = None, progress: bool = True,
                       unprotected: float = 0, seed: int = 0,
                       distractors: Distractors | None = None) -> ProtectionResult:
    """Each attacker posts perturbed train pictures (all but `unprotected` of them); the
    gallery holds the `distractors` too, where given (evaluation/distractors.py)."""
    train = [p for i in split.identities for p in split.train[i]]
    test = [p for i in split.identities for p in split.test[i]]
    gallery = embeddings.embed(extractor, train, progress)
    queries = embeddings.embed(extractor, test, progress)
    labels = [p.identity for p in train]
    searched, searched_labels = gallery, labels
    if distractors is not None and distractors.n:
        rows, names = distractors.rows(extractor, gallery, labels, embeddings, progress)
        searched, searched_labels = np.vstack([gallery, rows]), [*labels, *names.tolist()]
        del rows, names  # 2 GB at a million rows: freed before the index copies the gallery
    evaluator = NearestNeighbourEvaluator(searched, searched_labels, queries,
                                          [p.identity for p in test], index, attackers=attackers)
    posted = post_pictures(split, attackers, attack, perturbed, unprotected, seed, progress)
    pictures, owners = posted.flat()
    rows = embeddings.embed(extractor, pictures, progress)
    result = ProtectionResult([], [], posted.budgets, evaluator.thresholds)
    attacked = evaluator.outcomes({a: rows[owners == a] for a in attackers})
    train_owners = np.array(labels)
    clean = evaluator.outcomes({a: gallery[train_owners == a] for a in attackers})
    for a in attackers:
        attacked[a].n_perturbed = posted.n_perturbed(a)
        result.outcomes.append(attacked[a])
        result.clean_outcomes.append(clean[a])
    return result
