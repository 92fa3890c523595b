"""`facecure audit --adaptive`: the trainer that adapts, from what the real world's experiments
stored: the robust models its adaptive experiment fine-tuned (defense=robust and
robust_invariant) and the perturbation detectors its detection experiment trained. Nothing is
trained here: a missing model says which experiment makes it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from facecure.defenses.detector import perturbed_probability
from facecure.defenses.detector_model import Detector, load_detector
from facecure.defenses.fine_tuning import trainable_copy
from facecure.extractors.base import Extractor
from facecure.results import read_results

log = logging.getLogger(__name__)


def _records(folder: Path) -> list[list[dict]]:
    """Every finished job's records under `folder` (run record first)."""
    return [read_results(p) for p in sorted(folder.glob("**/results.jsonl"))]


def robust_models(sweep: Path, factory, cache_dir: Path) -> list[tuple[dict, Extractor]]:
    """(info, extractor) for each robust model the adaptive experiment's records name, loaded
    from the fine-tune's cache file with weights_only=True."""
    found: dict[str, dict] = {}
    for records in _records(sweep / "adaptive"):
        for r in records:
            if r.get("kind") == "aggregate" and r.get("defense") in ("robust", "robust_invariant"):
                found.setdefault(r["extractor_fingerprint"], r)
    if not found:
        raise FileNotFoundError(f"--adaptive: no robust model recorded under {sweep / 'adaptive'}:"
                                " run `facecure -m experiment=adaptive world=real` first")
    out = []
    for fp, r in found.items():
        path = cache_dir / "defenses" / f"{fp}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--adaptive: {path} (the fine-tune of {r['extractor']}) is "
                                    "missing: rerun `facecure -m experiment=adaptive world=real`")
        base_name = r["extractor"].split("+")[0]
        robust = trainable_copy(factory.get(base_name), r["defense"])
        robust.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        robust.name, robust.fingerprint = r["extractor"], fp
        out.append(({"base": base_name, "name": r["extractor"], "defense": r["defense"]},
                    robust.eval().requires_grad_(False)))
    return out


def detectors(sweep: Path) -> list[tuple[dict, dict, Detector]]:
    """(detection record, crop of its run, detector) for each detector the detection
    experiment trained, scored there on its own attack."""
    out, seen = [], set()
    for records in _records(sweep / "detection"):
        run = records[0]
        for r in records:
            if (r.get("kind") != "detector" or r["train_attack"] != r["test_attack"]
                    or not r.get("detector_file") or r["detector_file"] in seen):
                continue
            seen.add(r["detector_file"])
            out.append((r, run.get("crop") or {"kind": "none"},
                        load_detector(r["detector_file"], r["model_name"], r["input_size"])))
    if not out:
        raise FileNotFoundError(f"--adaptive: no detector recorded under {sweep / 'detection'} "
                                "(records older than the detector_file field do not count): run "
                                "`facecure -m experiment=detection world=real` first")
    return out


def detector_scores(detector: Detector, threshold: float, crops) -> dict:
    """How the detector sees the photos: mean probability of 'perturbed' and the share flagged."""
    if not crops:
        return {"n": 0, "mean_probability": None, "flagged": None}
    p = perturbed_probability(detector, crops)
    return {"n": len(p), "mean_probability": float(p.mean()), "flagged": float((p >= threshold).mean())}
