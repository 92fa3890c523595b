"""Open-set identification, as face-search engines run it (NIST FRVT 1:N, ISO/IEC 19795-1).

A search returns its nearest gallery identity only when the distance passes a threshold. The
threshold is set from non-mated searches (probes whose identity is not in the gallery): at
FPIR 1e-2, one non-mated search in a hundred returns someone. TPIR at that threshold is the
share of mated searches whose top-1 candidate is the right identity and passes it; the
paper's closed-set 1-NN protection rate is the same measure with no threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FPIRS = (1e-2, 1e-3)  # the operating points face-search evaluations report


@dataclass(frozen=True)
class Threshold:
    fpir: float  # the FPIR asked for
    distance: float  # a search returns a candidate when its squared L2 distance is <= this
    achieved_fpir: float  # the share of non-mated searches that pass it (<= fpir)
    n_nonmated: int

    @property
    def resolved(self) -> bool:
        """Whether there are enough non-mated searches to measure this FPIR at all (>= 1/fpir):
        with fewer, the threshold only says "no non-mated search passed"."""
        return self.n_nonmated * self.fpir >= 1


def threshold_at_fpir(nonmated: np.ndarray, fpir: float) -> Threshold:
    """The loosest distance threshold at which at most `fpir` of the non-mated searches (their
    top-1 distances) return a candidate. Ties are kept together: a threshold never splits
    searches at the same distance, so the achieved FPIR can fall below the target."""
    d = np.sort(np.asarray(nonmated, dtype=np.float64).ravel())
    if not len(d):
        raise ValueError("open-set threshold: no non-mated searches (a gallery of one identity?)")
    if not 0 < fpir < 1:
        raise ValueError(f"FPIR must lie in (0, 1), not {fpir}")
    allowed = math.floor(fpir * len(d) + 1e-9)  # how many non-mated searches may pass
    # Accepting `dist <= t` admits every search at distance <= t: take the largest distance
    # whose count of searches at or below it stays within the allowance.
    counts = np.searchsorted(d, d, side="right")
    ok = counts <= allowed
    if ok.any():
        t = float(d[ok].max())
    else:  # not even the closest non-mated search may pass
        t = float(np.nextafter(d[0], -np.inf))
    return Threshold(fpir, t, float((d <= t).mean()), len(d))


def tpir(hit: np.ndarray, dist: np.ndarray, threshold: Threshold) -> float:
    """The share of mated searches whose top-1 candidate is their own identity (`hit`) and
    passes the threshold."""
    hit, dist = np.asarray(hit, dtype=bool), np.asarray(dist, dtype=np.float64)
    if not len(hit):
        return math.nan
    return float((hit & (dist <= threshold.distance)).mean())


def fpir_key(fpir: float) -> str:
    """A record field's suffix for an operating point: 1e-2 -> 'fpir1e-2'."""
    return "fpir" + f"{fpir:.0e}".replace("e-0", "e-")

