"""What a defense sees: the run's objects, with the identities split into public and evaluation.

The model trainer's public users (half of the identities by default, never an attacker) are
the data a defense may train on, clean and perturbed; the evaluation users are the ones the
1-NN (or a classifier) is scored on, as in the paper's adaptive experiments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from omegaconf import DictConfig, OmegaConf

from facecure.attacks.base import Attack, attack_label
from facecure.attacks.store import PerturbedStore
from facecure.data.dataset import Picture, Split
from facecure.evaluation.distractors import Distractors
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.evaluation.index import FlatL2Index
from facecure.evaluation.protection import (
    Posted,
    ProtectionResult,
    measure_protection,
    post_pictures,
)
from facecure.extractors.base import Extractor


def split_public(identities: list[str], public_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded (public, evaluation) halves of the identities."""
    if not 0 <= public_fraction < 1:
        raise ValueError(f"defense.public_fraction must be in [0, 1), not {public_fraction}")
    order = np.random.default_rng([seed, 4]).permutation(sorted(identities))
    n_public = int(round(public_fraction * len(order)))
    return sorted(order[:n_public].tolist()), sorted(order[n_public:].tolist())


class Builds(Protocol):
    """What a defense may build, as the run builds its own (`facecure.factory.Factory`)."""

    def extractor(self, spec: str | dict | None = None) -> Extractor: ...
    def attack(self, spec, **overrides) -> Attack: ...
    def named_attacks(self, entries) -> list[tuple[str, Attack]]: ...
    def defense(self, spec, **overrides): ...


@dataclass
class DefenseContext:
    cfg: DictConfig                   # the root config; cfg.defense holds the defense's settings
    split: Split                      # evaluation identities only
    public: Split                     # the public users' pictures (train and test parts)
    attackers: list[str]
    extractor: Extractor              # the trainer's base extractor
    attack: Attack
    build: Builds                     # other extractors, attacks, defenses by config name
    embeddings: EmbeddingStore
    perturbed: PerturbedStore
    index: FlatL2Index
    run_dir: Path
    device: str
    progress: bool
    seed: int
    unprotected: float = 0
    distractors: Distractors | None = None  # eval.distractors: identities in every gallery

    @property
    def cache_dir(self) -> Path:
        """Where trained defenses are cached (by fingerprint), beside the other stores."""
        return Path(self.cfg.paths.cache_dir) / "defenses"

    @property
    def trainer_kwargs(self) -> dict:
        """The run's Lightning trainer settings (`trainer` group), for every fit a defense makes."""
        trainer = self.cfg.get("trainer")
        return OmegaConf.to_container(trainer, resolve=True) if trainer is not None else {}

    def named_attacks(self, entries) -> list[tuple[str, Attack]]:
        """(label, attack) per entry of a defense's `train_attacks`-like setting (config names,
        "name/mode", {name: ..., overrides}); None: the run's own attack."""
        if entries is None:
            return [(attack_label(self.cfg.attack), self.attack)]
        return self.build.named_attacks(entries)

    def public_pictures(self) -> list[Picture]:
        return [p for i in self.public.identities for p in self.public.train[i] + self.public.test[i]]

    def posted(self) -> Posted:
        """What the attackers post (their train pictures perturbed by the run's attack)."""
        return post_pictures(self.split, self.attackers, self.attack, self.perturbed,
                             self.unprotected, self.seed, self.progress)

    def protection(self, extractor: Extractor) -> ProtectionResult:
        """The paper's measurement with `extractor` as the trainer's model, on evaluation users."""
        return measure_protection(self.split, self.attackers, extractor, self.attack,
                                  self.embeddings, self.perturbed, self.index, self.progress,
                                  self.unprotected, self.seed, self.distractors)


@dataclass
class Defended:
    """One defended system's measurement; the run turns it into attacker + aggregate records."""

    result: ProtectionResult
    defense: str                      # robust | clip_finetune | combined | linear | end_to_end | none
    extractor: str                    # the name the records carry
    extractor_fingerprint: str
    # What tells this system from the run's others (a report row each): {"alpha": 0.6},
    # {"system": "top2", ...}. Its records list these names under "labels".
    labels: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)  # values found while scoring (rerouted_share)
