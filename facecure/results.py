"""results.jsonl: one JSON record per line, written when the job has finished.

Kinds: "run" (what ran, on what, with which versions and what was skipped), "attacker" (one
attacker user under one attack, extractor and defense) and "aggregate" (mean, std and 95% CI
over the attackers of a group).
"""
from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path

import numpy as np

from facecure.evaluation.stats import summarize
from facecure.utils.io import atomic_write_text

PACKAGES = ("facecure", "torch", "torchvision", "lightning", "faiss-cpu", "hydra-core", "numpy",
            "timm", "open-clip-torch", "pytorch-msssim")


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    """What CPU arithmetic a run's numbers come from: kernels by CPU kind and the thread count
    change float sums, so a rerun elsewhere can move within its spread (docs/experiments.md)."""
    import platform

    import torch

    from facecure.utils.cached_fit import FIT_THREADS

    return {"cpu": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "fit_threads": FIT_THREADS,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_results(path: str | Path, records: list[dict]) -> None:
    """Write a job's records at once (atomically): the file exists only for a finished job."""
    atomic_write_text(Path(path), "".join(json.dumps(_clean(r)) + "\n" for r in records))


def read_results(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def budget_summary(budgets: list[dict]) -> dict:
    """Measured budget of an attacker's perturbed pictures, in 0-1 pixel units."""
    if not budgets:
        return {"dssim_mean": None, "dssim_max": None, "linf_max": None, "psnr_mean": None,
                "lpips_mean": None}
    psnr = [b["psnr"] for b in budgets if b["psnr"] is not None and math.isfinite(b["psnr"])]
    lpips = [b["lpips"] for b in budgets if b.get("lpips") is not None]
    return {"dssim_mean": float(np.mean([b["dssim"] for b in budgets])),
            "dssim_max": float(np.max([b["dssim"] for b in budgets])),
            "linf_max": float(np.max([b["linf"] for b in budgets])),
            "psnr_mean": float(np.mean(psnr)) if psnr else None,
            "lpips_mean": float(np.mean(lpips)) if lpips else None}


# What varies from one attacker record to the next: measured, never a label of the group.
ATTACKER_VALUES = ("kind", "attacker", "protection_rate", "clean_accuracy", "n_test", "n_train",
                   "n_perturbed", "unprotected", "budget", "open_set")


def aggregate(records: list[dict]) -> dict:
    """One aggregate record over attacker records of the same (attack, extractor, defense):
    every label the attackers share, copied, and the summary of their measurements."""
    first = records[0]
    labels = {k: v for k, v in first.items()
              if k not in ATTACKER_VALUES and all(r.get(k) == v for r in records)}
    pr = summarize(r["protection_rate"] for r in records)
    ca = summarize(r["clean_accuracy"] for r in records)
    budgets = [r["budget"] for r in records if r.get("budget")]
    return {
        "kind": "aggregate", **labels,
        "protection_rate_mean": pr["mean"], "protection_rate_std": pr["std"],
        "protection_rate_ci95": pr["ci95"], "clean_accuracy": ca["mean"],
        "clean_accuracy_std": ca["std"], "n_attackers": len(records),
        "n_test": int(sum(r["n_test"] for r in records)),
        "dssim_max": max((b["dssim_max"] for b in budgets if b["dssim_max"] is not None), default=None),
        "linf_max": max((b["linf_max"] for b in budgets if b["linf_max"] is not None), default=None),
        **open_set_means(records),
    }


def open_set_means(records: list[dict]) -> dict:
    """`open_protection_<fpir>_mean` per operating point the attacker records carry (none for
    defenses that are no nearest-neighbour search)."""
    keys = dict.fromkeys(k for r in records for k in (r.get("open_set") or {}))
    return {f"open_protection_{k}_mean": float(np.mean([r["open_set"][k] for r in records]))
            for k in keys if all(k in (r.get("open_set") or {}) for r in records)}
