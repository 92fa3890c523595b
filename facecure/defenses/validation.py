"""Validation on held-out public users: the adaptive trainer's own check of a robust recipe.

The trainer may not look at the evaluation users, but it owns the public ones. With
`defense.validation_users: N`, N public users (seeded) stay out of the fine-tune; afterwards
each is scored like an attacker (their train pictures perturbed by each train attack, the
public users' train pictures as the gallery, their clean test pictures as queries), for the
base and the robust extractor. The records (`"kind": "validation"`) let recipes be compared,
and chosen, without touching the users the results are reported on.
"""
from __future__ import annotations

import logging

import numpy as np

from facecure.attacks.base import Attack, NoAttack
from facecure.defenses.context import DefenseContext
from facecure.evaluation.protection import measure_protection
from facecure.extractors.base import Extractor

log = logging.getLogger(__name__)


def validation_users(ctx: DefenseContext, n: int) -> list[str]:
    """`n` public users held out of the fine-tune, drawn by the run's seed."""
    if not n:
        return []
    public = sorted(ctx.public.identities)
    if not 0 < n < len(public):
        raise ValueError(f"defense.validation_users={n}: must be between 1 and "
                         f"{len(public) - 1}, the public users less one to train on")
    order = np.random.default_rng([ctx.seed, 5]).permutation(public)
    return sorted(order[:n].tolist())


def validation_records(ctx: DefenseContext, n: int, attacks: list[tuple[str, Attack]],
                       extractors: list[tuple[str, Extractor]]) -> list[dict]:
    """One record per (train attack, extractor): mean protection and clean error over the
    held-out public users. `attacks`: (label, attack) pairs, as `named_attacks` gives them;
    `extractors`: (defense label, extractor) pairs."""
    users = validation_users(ctx, n)
    if not users:
        return []
    records = []
    for label, attack in attacks:
        if isinstance(attack, NoAttack):
            continue
        for defense, extractor in extractors:
            result = measure_protection(ctx.public, users, extractor, attack, ctx.embeddings,
                                        ctx.perturbed, ctx.index, ctx.progress, 0, ctx.seed)
            protection = float(np.mean([o.protection_rate for o in result.outcomes]))
            clean_error = float(np.mean([o.protection_rate for o in result.clean_outcomes]))
            records.append({
                "kind": "validation", "defense": defense, "extractor": extractor.name,
                "extractor_fingerprint": extractor.fingerprint,
                "validation_attack": label,
                "validation_attack_fingerprint": attack.fingerprint,
                "validation_users": users, "protection_rate": protection,
                "clean_error": clean_error, "gap": protection - clean_error})
            log.info("validation on %d held-out public users, %s vs %s: protection %.1f%%, "
                     "clean error %.1f%%", len(users), label, extractor.name,
                     100 * protection, 100 * clean_error)
    return records
