"""Attacker records grouped the way the paper's figures group them, pooled over seeds."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from facecure.evaluation.open_set import FPIRS, fpir_key
from facecure.report.collect import extractor_date

# The columns every row of results.csv has, in this order. Which records make one row is the
# records' own business: each lists the labels that tell its system apart under "labels"
# (records written before they did are grouped by these columns).
GROUP_KEYS = ("world", "experiment", "attack", "attack_mode", "attack_label", "extractor", "defense",
              "system", "alpha", "classifier", "robust_public", "attack_unprotected", "dataset")

# The open-set operating points every row has a column for (None where the records lack them:
# written before they were measured, or a defense that is no nearest-neighbour search).
OPEN_SET_KEYS = tuple(fpir_key(f) for f in FPIRS)

# The settings of the job's attack that its clean-baseline records carry but do not depend on.
CLEAN_BASELINE = {"attack_mode": None, "attack_label": None, "attack_unprotected": None}


def attack_name(r: dict) -> str:
    """How tables and figures name the attack; the clean baseline's records carry the run's
    attack label too, but they are "none" (WiSE-FT's curve told them apart by this name)."""
    if r["attack"] == "none":
        return "none"
    if r.get("attack_label"):
        return str(r["attack_label"])
    return r["attack"] + (f" ({r['attack_mode']})" if r.get("attack_mode") else "")


def system_name(r: dict) -> str:
    """The trainer's model: extractor, then its defense (and the defense's variant) in brackets
    where the extractor's name does not already say it."""
    name, defense = r["extractor"], r.get("defense") or "none"
    tag = "" if defense == "none" else defense
    if r.get("system"):
        tag = f"{defense}: {r['system']}"
    # a classifier trained with the public perturbed pictures too
    robust = ", robust public data" if r.get("robust_public") else ""
    if tag and tag not in name and not (defense == "clip_finetune" and "wiseft@" in name):
        name += f" [{tag}{robust}]"
    if r.get("alpha") is not None and "wiseft@" not in name:
        name += f" [alpha={r['alpha']}]"
    return name


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def group_labels(r: dict) -> tuple:
    """(label, value) pairs that make a record's row: the record's own "labels" list."""
    return tuple((k, _hashable(r.get(k))) for k in sorted(r.get("labels") or GROUP_KEYS))


def group_attackers(attackers: list[dict]) -> list[dict]:
    """One row per group: mean/std of protection and clean accuracy over attacker records
    (several seeds pool their attackers; the same attacker of duplicate runs counts once).
    Models of one name but different weights (a robust fine-tune swept over its learning rate)
    are separate rows, named by the job folders they come from."""
    groups: dict[tuple, dict] = defaultdict(dict)
    for r in attackers:
        if r["attack"] == "none":  # the clean baseline: one row whatever attack the job ran
            r = {**r, **CLEAN_BASELINE}
        key = (group_labels(r), r.get("extractor_fingerprint"))
        groups[key][(r.get("seed"), r.get("attacker"), r.get("attack_fingerprint"))] = r
    weights = defaultdict(set)  # the group without the fingerprint -> fingerprints seen
    for key in groups:
        weights[key[:-1]].add(key[-1])
    rows = []
    for key, members in groups.items():
        recs = list(members.values())
        pr = np.array([r["protection_rate"] for r in recs], dtype=float)
        ca = np.array([r["clean_accuracy"] for r in recs], dtype=float)
        budgets = [r.get("budget") or {} for r in recs]
        dssim = [b["dssim_max"] for b in budgets if b.get("dssim_max") is not None]
        linf = [b["linf_max"] for b in budgets if b.get("linf_max") is not None]
        first = recs[0]
        name = model_name = system_name(first)
        base_name = name  # the model and its search, whatever the gallery's size and recall
        if first.get("index") not in (None, "flat"):  # approximate search: say so, and how good
            recall = min((r["index_recall_at_1"] for r in recs
                          if r.get("index_recall_at_1") is not None), default=None)
            base_name += f" [{first['index']}]"
            name += f" [{first['index']}" + (f", recall@1 {recall:.3f}]" if recall is not None else "]")
        if first.get("distractors"):  # a bigger gallery: its own row, and whether it was drawn
            drawn = ", drawn" if first.get("distractors_drawn") else ""
            name += f" [+{first['distractors']:,} distractors{drawn}]"
        if len(weights[key[:-1]]) > 1:
            name += " (" + ", ".join(sorted({Path(r.get("run_dir") or ".").name for r in recs})) + ")"
        rows.append({
            **{k: first.get(k) for k in GROUP_KEYS}, **dict(key[0]),
            "extractor_role": first.get("extractor_role"), "white_box": first.get("white_box"),
            "attack_name": attack_name(first),
            "system_name": name, "system_base": base_name, "system_model": model_name,
            "distractors": first.get("distractors") or 0,
            "distractors_drawn": first.get("distractors_drawn"),
            "index": first.get("index") or "flat",
            "index_recall_at_1": min((r["index_recall_at_1"] for r in recs
                                      if r.get("index_recall_at_1") is not None), default=None),
            "date": first.get("extractor_date") or extractor_date(first["extractor"]),
            "protection_mean": float(pr.mean()), "protection_std": float(pr.std(ddof=1)) if len(pr) > 1 else 0.0,
            "clean_accuracy": float(ca.mean()), "n_attackers": len(recs),
            "seeds": sorted({r.get("seed") for r in recs}),
            "unprotected_mean": float(np.mean([r.get("unprotected", 0) for r in recs])),
            "dssim_max": max(dssim) if dssim else None, "linf_max": max(linf) if linf else None,
            **{f"open_protection_{k}": open_mean(recs, k) for k in OPEN_SET_KEYS},
            "synthetic": bool(first.get("synthetic")),
        })
    return sorted(rows, key=lambda g: (g["experiment"] or "", g["attack"] != "none", g["attack_name"],
                                       g["date"], g["system_base"], g["distractors"], g["system_name"]))


def open_mean(records: list[dict], key: str) -> float | None:
    """Mean open-set protection at one operating point, if every record measured it."""
    values = [(r.get("open_set") or {}).get(key) for r in records]
    return None if any(v is None for v in values) else float(np.mean(values))


def is_plain(g: dict) -> bool:
    """A single model's row: not a combined system, a WiSE-FT alpha or a classifier."""
    return g["system"] is None and g["alpha"] is None and g["classifier"] is None


def clean_baselines(groups: list[dict]) -> dict[tuple, dict]:
    """(experiment, model, data set) -> the row of the same attackers posting clean pictures."""
    return {(g["experiment"], g["system_name"], g["dataset"]): g for g in groups
            if g["attack"] == "none"}
