"""`attack=mixed`: a user perturbs a share of their pictures with one attack, the rest with
another (the paper's half Fawkes v0.3 / half v1.0 user). Which picture gets which attack is
seeded per user."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facecure.attacks.base import Attack
from facecure.data.dataset import Picture
from facecure.utils.io import fingerprint


class MixedAttack(Attack):
    name = "mixed"

    def __init__(self, first: Attack, second: Attack, share: float = 0.5, seed: int = 0):
        if not 0 <= share <= 1:
            raise ValueError(f"attack.share must be in [0, 1], not {share}")
        self.first, self.second, self.share, self.seed = first, second, share, seed

    def params(self) -> dict:
        return {"name": self.name, "first": self.first.fingerprint,
                "second": self.second.fingerprint, "share": self.share, "seed": self.seed}

    def perturb(self, x, identities):
        raise TypeError("a mixed attack perturbs each user's shares with its two attacks: "
                        "use facecure.evaluation.protection.perturb_users")

    def split(self, pictures: Sequence[Picture]) -> tuple[list[Picture], list[Picture]]:
        """One user's pictures -> (perturbed by `first`, perturbed by `second`)."""
        if not pictures:
            return [], []
        rng = np.random.default_rng([self.seed, 4, int(fingerprint(pictures[0].identity, 8), 16)])
        order = rng.permutation(len(pictures))
        n_first = int(round(self.share * len(pictures)))
        first = {int(i) for i in order[:n_first]}
        return ([p for i, p in enumerate(pictures) if i in first],
                [p for i, p in enumerate(pictures) if i not in first])


def leaf_attacks(attack: Attack) -> list[Attack]:
    """The plain attacks a (possibly nested) mixed attack is made of; [attack] for a plain one."""
    if isinstance(attack, MixedAttack):
        return leaf_attacks(attack.first) + leaf_attacks(attack.second)
    return [attack]
