"""The robust criterion as a table: how far a model's protection rate against an attack stays
above its own clean error on the same attacker users (paper Sec. 4.1: robust training should
bring the first down to the second), paired per attacker, with a 95% interval."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from facecure.evaluation.stats import summarize
from facecure.report.groups import attack_name, system_name


def _model_key(r: dict) -> tuple:
    """One model on one attacker: records of the same trained model (by fingerprint) meet."""
    return (r.get("experiment"), r.get("dataset"), r["extractor_fingerprint"], r["attacker"],
            r.get("seed"))


def paired_gaps(attackers: list[dict]) -> list[dict]:
    """For each (experiment, model, attack) of an experiment with a robust model: mean
    protection, mean clean error (attack none, same model and attackers) and their gap, with
    its interval. Single models only (no combined systems, no classifiers); a record whose
    model has no clean record for that attacker is left out, not guessed."""
    robust = {r.get("experiment") for r in attackers if r.get("defense") == "robust"}
    plain = [r for r in attackers if r.get("experiment") in robust
             and r.get("defense") in ("none", "robust") and not r.get("system")
             and not r.get("classifier") and r.get("extractor_fingerprint")]
    clean = {_model_key(r): r["protection_rate"] for r in plain if r["attack"] == "none"}
    pairs: dict[tuple, dict] = defaultdict(dict)
    for r in plain:
        if r["attack"] == "none" or _model_key(r) not in clean:
            continue
        # several runs may score the same model on the same cloaks: each attacker counts once
        pairs[(r.get("experiment"), system_name(r), attack_name(r))][
            (*_model_key(r), r.get("attack_fingerprint"))] = (r["protection_rate"],
                                                              clean[_model_key(r)])
    rows = []
    for (experiment, model, attack), by_attacker in sorted(pairs.items()):
        p, c = np.array(list(by_attacker.values())).T
        attackers = {key[3] for key in by_attacker}  # seeds pooled, as in the protection table
        gap = summarize(p - c)  # the tool's spread: Student t over attackers, as elsewhere
        rows.append({"experiment": experiment, "model": model, "attack": attack,
                     "attackers": len(attackers), "pairs": len(p), "protection": float(p.mean()),
                     "clean_error": float(c.mean()), "gap": gap["mean"], "ci95": gap["ci95"]})
    return rows


def gap_table(attackers: list[dict]) -> str:
    """paired_gaps as markdown, empty when the records hold no robust model."""
    rows = paired_gaps(attackers)
    if not rows:
        return ""
    out = ["### Protection above clean error (the robust criterion, paired per attacker)", "",
           "| attack | trainer's model | attackers | protection % | clean error % | "
           "gap (points) | 95% interval |", "|---|---|---|---|---|---|---|"]
    for g in rows:
        # a difference of two rates lies in [-1, 1], whatever the t interval says
        ci = "-" if g["ci95"] is None else \
            f"[{100 * max(g['gap'] - g['ci95'], -1):+.1f}, {100 * min(g['gap'] + g['ci95'], 1):+.1f}]"
        out.append(f"| {g['attack']} | {g['model']} | {g['attackers']} | "
                   f"{100 * g['protection']:.1f} | {100 * g['clean_error']:.1f} | "
                   f"{100 * g['gap']:+.1f} | {ci} |")
    out += ["", "Gap: the model's protection rate minus its own clean error on the same "
            "attackers, averaged over attackers (seeds pooled); interval: 95% Student t over them. "
            "A robust model the attack no longer fools has a gap near zero."]
    return "\n".join(out)
