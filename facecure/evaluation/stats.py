"""Spread over attacker users: mean, sample std and the 95% confidence half-width (Student t)."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def ci95(std: float, n: int) -> float | None:
    """Half-width of the 95% Student t interval of a mean of `n` values with sample std `std`."""
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else None


def summarize(values) -> dict:
    v = np.asarray(list(values), dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "ci95": ci95(std, n), "n": n}
