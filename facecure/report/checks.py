"""The paper's claims as checks a report's rows must pass (issue: the paper on real faces).

- white-box: a protection hides its users from the very model it was made against
  (protection >= 80% wherever the trainer's model is one of the attack's surrogates);
- adaptive: the robust fine-tune lowers every attack's protection below the base model's;
- detection: a detector trained on an attack flags it (AUC >= 0.95 on held-out users).

Each check is run on whatever rows a report holds; one with no rows to judge says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from facecure.report.groups import is_plain
from facecure.worlds import record_world

WHITE_BOX_MIN = 0.80  # the least protection against the attack's own surrogate
DETECTOR_AUC_MIN = 0.95  # the least AUC of a detector scored on its own attack
ROBUST_DEFENSES = ("robust", "robust_invariant")


@dataclass
class Check:
    name: str
    claim: str
    results: list[tuple[str, bool]] = field(default_factory=list)  # (what, passed)

    @property
    def passed(self) -> bool | None:
        """True / False, or None when no row could be judged."""
        return all(ok for _, ok in self.results) if self.results else None


def tested_on_own_attack(d: dict) -> bool:
    """A detector scored on the attack it was trained on, or on one part of its mixed train
    attack (the paper's Fawkes detector: trained on all three modes, scored on each)."""
    if d["train_attack"] == d["test_attack"]:
        return True
    return d.get("test_attack_fingerprint") in (d.get("train_part_fingerprints") or [])


def _where(g: dict) -> str:
    return f"{record_world(g)} {g['experiment']}"


def white_box(groups: list[dict]) -> Check:
    check = Check("white-box", f"protection >= {WHITE_BOX_MIN:.0%} against the attack's own "
                  "surrogate")
    for g in groups:
        if g.get("white_box") and g["attack"] != "none" and is_plain(g) and \
                (g.get("defense") or "none") == "none" and not g.get("attack_unprotected"):
            check.results.append(
                (f"{_where(g)}: {g['attack_name']} vs {g['system_name']} "
                 f"{100 * g['protection_mean']:.1f}%", g["protection_mean"] >= WHITE_BOX_MIN))
    return check


def robust_below_base(groups: list[dict]) -> Check:
    check = Check("adaptive", "the robust model's protection below the base model's, every attack")
    base = {(g.get("world"), g["experiment"], g["attack_name"], g["extractor"], g["dataset"]): g
            for g in groups if is_plain(g) and (g.get("defense") or "none") == "none"}
    for g in groups:
        if g.get("defense") not in ROBUST_DEFENSES or g["attack"] == "none" or not is_plain(g):
            continue
        b = base.get((g.get("world"), g["experiment"], g["attack_name"],
                      g["extractor"].split("+")[0], g["dataset"]))
        if b is not None:
            check.results.append(
                (f"{_where(g)}: {g['attack_name']}, {g['defense']} {100 * g['protection_mean']:.1f}% "
                 f"vs base {100 * b['protection_mean']:.1f}%",
                 g["protection_mean"] < b["protection_mean"]))
    return check


def detector_auc(detectors: list[dict]) -> Check:
    check = Check("detection", f"AUC >= {DETECTOR_AUC_MIN} on the detector's own attack")
    for d in detectors:
        if tested_on_own_attack(d):
            check.results.append(
                (f"{record_world(d)} {d.get('experiment')}: trained on "
                 f"{d['train_attack']}, tested on {d['test_attack']}: AUC {d['auc']:.3f}",
                 d["auc"] >= DETECTOR_AUC_MIN))
    return check


def run_checks(groups: list[dict], detectors: list[dict]) -> list[Check]:
    return [white_box(groups), robust_below_base(groups), detector_auc(detectors)]


def checks_section(checks: list[Check]) -> list[str]:
    """The checks as markdown: a line each, every judged row under it."""
    md = ["## Checks: the paper's claims on these rows", ""]
    for c in checks:
        verdict = {True: "**pass**", False: "**FAIL**", None: "not judged (no rows)"}[c.passed]
        md.append(f"- {c.name} ({c.claim}): {verdict}")
        md += [f"  - {'pass' if ok else 'FAIL'}: {what}" for what, ok in c.results]
    return md + [""]
