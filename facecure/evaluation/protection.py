"""The paper's core measurement, as a plain function over objects (no Hydra).

Attacker users perturb their train pictures with `attack`; the model trainer embeds everything
with `extractor` and classifies each test picture by its nearest train picture.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecure.attacks.base import Attack
from facecure.attacks.store import PerturbedStore
from facecure.data.dataset import Split
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.evaluation.evaluator import AttackerOutcome, NearestNeighbourEvaluator
from facecure.evaluation.index import FlatL2Index
from facecure.extractors.base import Extractor


@dataclass
class ProtectionResult:
    outcomes: list[AttackerOutcome]  # with the attack
    clean_outcomes: list[AttackerOutcome]  # the same attackers posting clean pictures
    budgets: dict[str, list[dict]] = field(default_factory=dict)  # attacker -> per picture


def measure_protection(split: Split, attackers: list[str], extractor: Extractor, attack: Attack,
                       embeddings: EmbeddingStore, perturbed: PerturbedStore,
                       index: FlatL2Index | None = None, progress: bool = True) -> ProtectionResult:
    train = [p for i in split.identities for p in split.train[i]]
    test = [p for i in split.identities for p in split.test[i]]
    gallery = embeddings.embed(extractor, train, progress)
    queries = embeddings.embed(extractor, test, progress)
    evaluator = NearestNeighbourEvaluator(gallery, [p.identity for p in train], queries,
                                          [p.identity for p in test], index)
    attacked = [p for a in attackers for p in split.train[a]]
    cloaked, budgets = perturbed.perturb_pictures(attack, attacked, progress)
    cloaked_emb = embeddings.embed(extractor, cloaked, progress)
    rows = np.array([p.identity for p in cloaked])
    result = ProtectionResult([], [])
    for a in attackers:
        mine = rows == a
        result.outcomes.append(evaluator.outcome(a, cloaked_emb[mine]))
        result.clean_outcomes.append(evaluator.outcome(a, gallery[[p.identity == a for p in train]]))
        result.budgets[a] = [b for b, m in zip(budgets, mine) if m]
    return result
