"""One model's verdict: the person's posted photos in a gallery among distractor identities,
their probe photos searched in it, as a face-search engine would (closed and open set)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from facecure.evaluation.index import FlatL2Index
from facecure.evaluation.open_set import FPIRS, fpir_key, threshold_at_fpir, tpir

YOU = "\x00you"  # the audited person's label in the gallery: never a folder name


@dataclass
class SearchResult:
    n_posted: int
    n_probes: int
    n_distractor_ids: int
    rank1: float  # share of probe photos whose nearest identity is the person
    rank_k: dict[int, float]  # k -> share with the person among the k nearest identities
    tpir: dict[str, float]  # "fpir1e-2" -> share found at that threshold (TPIR)
    thresholds: list[dict]  # per FPIR: distance, achieved FPIR, non-mated searches, resolved
    stranger_median: float  # the median distance of a photo to its nearest stranger
    probes: list[dict] = field(default_factory=list)  # per probe: rank, distance, found at each FPIR

    def as_dict(self) -> dict:
        out = asdict(self)
        out["rank_k"] = {str(k): v for k, v in self.rank_k.items()}
        return out


def identity_ranking(dist: np.ndarray, idx: np.ndarray, labels: np.ndarray) -> list[list]:
    """Each query's identities in order of their nearest row (duplicates dropped), with the
    distance of that row: [[(label, distance), ...], ...]."""
    out = []
    for d_row, i_row in zip(dist, idx):
        seen, ranked = set(), []
        for d, i in zip(d_row, i_row):
            if i < 0:
                continue
            lab = labels[i]
            if lab not in seen:
                seen.add(lab)
                ranked.append((lab, float(d)))
        out.append(ranked)
    return out


def search_person(posted: np.ndarray, probes: np.ndarray, distractors: np.ndarray,
                  distractor_labels, ks=(5, 10), fpirs=FPIRS,
                  index: FlatL2Index | None = None) -> SearchResult:
    """`posted` (P, D): the person's gallery rows; `probes` (Q, D): other photos of them;
    `distractors` (N, D) with their identity labels. Thresholds come from non-mated searches:
    each distractor photo searched in the gallery without its own identity's rows."""
    index = index or FlatL2Index("cpu")
    labels = np.array([YOU] * len(posted) + [str(x) for x in distractor_labels], dtype=object)
    gallery = np.concatenate([posted, distractors]).astype(np.float32)
    names, codes = np.unique(labels, return_inverse=True)
    n_ids = len(names)
    # Non-mated: the first neighbour of another identity is within (its own rows + 1).
    k = min(len(gallery), int(np.bincount(codes).max()) + 1)
    d, i = index.search(gallery, distractors, k)
    own = codes[len(posted):]
    other = codes[i] != own[:, None]
    if not other.any(axis=1).all():
        raise ValueError("the gallery needs at least two identities besides the person's")
    nonmated = d[np.arange(len(d)), other.argmax(axis=1)]
    thresholds = [threshold_at_fpir(nonmated, f) for f in fpirs]
    # Probes: every gallery row, so the ranking of distinct identities is exact to the end.
    pd, pi = index.search(gallery, probes, len(gallery))
    ranked = identity_ranking(pd, pi, labels)
    rank = np.array([next(r for r, (lab, _) in enumerate(rows) if lab == YOU) + 1 for rows in ranked])
    top = [rows[0] for rows in ranked]
    hit = np.array([lab == YOU for lab, _ in top])
    top_d = np.array([dist for _, dist in top])
    probes_out = [{"rank": int(r), "distance": dist,
                   **{fpir_key(t.fpir): bool(h and dist <= t.distance) for t in thresholds}}
                  for r, h, (_, dist) in zip(rank, hit, top)]
    return SearchResult(
        n_posted=len(posted), n_probes=len(probes), n_distractor_ids=n_ids - 1,
        rank1=float(hit.mean()),
        rank_k={kk: float((rank <= kk).mean()) for kk in ks if kk <= n_ids},
        tpir={fpir_key(t.fpir): tpir(hit, top_d, t) for t in thresholds},
        thresholds=[{**asdict(t), "resolved": t.resolved} for t in thresholds],
        stranger_median=float(np.median(nonmated)),
        probes=probes_out)
