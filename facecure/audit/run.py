"""The audit itself: photos in, per model and per scrape a search of the probes, a verdict out.

Everything runs here: the photos are read from their folders, their crops, embeddings and the
report are written under this machine's cache and `--out`; nothing is sent anywhere.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from facecure.audit.photos import SCRAPES, Photos, face_crops, read_folder, scraped
from facecure.audit.search import search_person
from facecure.data.folder import folder_faces
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.evaluation.open_set import FPIRS
from facecure.extractors.base import to_tensor
from facecure.faces import crop_spec_of
from facecure.factory import Factory
from facecure.paths import CONF_DIR

log = logging.getLogger(__name__)


@dataclass
class AuditInput:
    posted: str
    probe: str
    clean: str | None = None
    distractors: str | None = None  # default: the real world's data folder
    exclude: list[str] = field(default_factory=list)  # distractor identities left out
    models: list[str] | None = None  # default: the real world's eras
    scrapes: list[str] = field(default_factory=lambda: list(SCRAPES))
    overrides: list[str] = field(default_factory=list)  # Hydra overrides (paths, align...)
    device: str = "cpu"
    progress: bool = True
    # The adaptive trainer's robust models and detectors, from the real world's experiments in
    # this sweep folder ("" for the real world's own, multirun/real); None: not audited.
    adaptive: str | None = None


def audit_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["world=real", *overrides])


def model_info(cfg, name: str) -> dict:
    from facecure.config_groups import compose_group, resolve_in

    node = resolve_in(cfg, "extractor", compose_group("extractor", name))
    return {"name": name, "date": str((node.get("info") or {}).get("date") or "?"),
            "crop": crop_spec_of(node)}


def budgets(posted: Photos, clean: Photos, lpips) -> list[dict]:
    """DSSIM, L-inf and LPIPS-Alex (None without its weights) per posted photo against its
    original, matched by file stem."""
    from facecure.attacks.budget import dssim, linf

    originals = {Path(p.name).stem: p for p in clean.pictures}
    out = []
    for p in posted.pictures:
        match = originals.get(Path(p.name).stem)
        if match is None:
            out.append({"photo": p.name, "error": "no original of this name in --clean"})
            continue
        a, b = to_tensor(match.load())[None], to_tensor(p.load())[None]
        if a.shape != b.shape:
            out.append({"photo": p.name, "error": f"another size than its original "
                        f"({b.shape[3]}x{b.shape[2]} vs {a.shape[3]}x{a.shape[2]})"})
            continue
        out.append({"photo": p.name, "dssim": float(dssim(b, a)[0]), "linf": float(linf(b, a)[0]),
                    "lpips_alex": float(lpips(b, a)[0]) if lpips else None})
    return out


def consistency(emb: dict[str, np.ndarray], t: float) -> list[str]:
    """Warnings where the photos do not look like one person under the newest model: probes
    unlike each other, or originals unlike every probe: farther apart than `t`, the median
    distance of a photo to its nearest stranger among the distractors (two photos of one
    person are nearly always closer; an open-set threshold would be far too strict here)."""
    probes, notes = emb["probe"], []
    if len(probes) > 1:
        dp = ((probes[:, None] - probes[None]) ** 2).sum(-1)
        np.fill_diagonal(dp, np.inf)
        alone = int((dp.min(axis=1) > t).sum())
        if alone:
            notes.append(f"{alone} of {len(probes)} probe photos look like no other probe photo: "
                         "is every probe photo of the same person?")
    if "clean" in emb and len(emb["clean"]):
        dc = ((emb["clean"][:, None] - probes[None]) ** 2).sum(-1).min(axis=1)
        unlike = int((dc > t).sum())
        if unlike == len(dc):
            notes.append("none of the original photos looks like the probe photos: are the probe "
                         "photos of someone else?")
        elif unlike:
            notes.append(f"{unlike} of {len(dc)} original photos look like no probe photo: do the "
                         "posted photos show more than one person?")
    return notes


def detector_verdicts(sweep: Path, posted: Photos, clean: Photos | None, aligner) -> list[dict]:
    """Each stored detector's view of the posted photos (would they be flagged as cloaked?)
    and of the originals (how often it flags clean photos)."""
    from facecure.audit.adaptive import detector_scores, detectors

    out = []
    for record, crop, detector in detectors(sweep):
        threshold = record.get("threshold", 0.5)
        entry = {"train_attack": record["train_attack"], "auc_on_own_attack": record["auc"],
                 "threshold": threshold, "file": record["detector_file"]}
        for label, photos in (("posted", posted), ("clean", clean)):
            if photos is not None:
                crops, _, _ = face_crops(photos.pictures, crop, aligner)
                entry[label] = detector_scores(detector, threshold, crops)
        out.append(entry)
    return out


def drop_cross_identity_duplicates(identities: dict[str, list]) -> list[str]:
    """Remove every copy of a picture that appears under two identities (same content key):
    one of its labels is wrong, and as a non-mated search it would find itself at distance 0.
    Returns "identity/name" of what was removed."""
    owners: dict[str, set] = {}
    for identity, pictures in identities.items():
        for p in pictures:
            owners.setdefault(p.key, set()).add(identity)
    shared = {k for k, ids in owners.items() if len(ids) > 1}
    removed = []
    for identity, pictures in identities.items():
        removed += [f"{identity}/{p.name}" for p in pictures if p.key in shared]
        identities[identity] = [p for p in pictures if p.key not in shared]
    return removed


def run_audit(inp: AuditInput) -> dict:
    """Every model's verdict for each condition (as posted, after each scrape, unprotected)."""
    started = time.time()
    cfg = audit_config(inp.overrides)
    unknown = set(inp.scrapes) - set(SCRAPES)
    if unknown:
        raise ValueError(f"unknown scrape(s) {sorted(unknown)}; known: {', '.join(SCRAPES)}")
    posted, probe = read_folder(inp.posted, "posted"), read_folder(inp.probe, "probe")
    clean = read_folder(inp.clean, "clean") if inp.clean else None
    root = inp.distractors or cfg.data.root
    distractor_set = folder_faces(root, "distractors", min_pictures=2, progress=inp.progress)
    for name in inp.exclude:
        if distractor_set.identities.pop(name, None) is None:
            raise ValueError(f"--exclude {name}: no such identity folder in {root}")
    mislabelled = drop_cross_identity_duplicates(distractor_set.identities)
    names = inp.models or [m for m in str(cfg.world.eras).split(",") if m]
    factory = Factory(cfg, inp.device)
    models = [(model_info(cfg, n), factory.get(n)) for n in names]
    sweep = None
    if inp.adaptive is not None:
        from facecure.audit.adaptive import robust_models

        sweep = Path(inp.adaptive or cfg.world.sweep_dir)
        for robust_info, robust in robust_models(sweep, factory, Path(cfg.paths.cache_dir)):
            base = model_info(cfg, robust_info["base"])
            models.append(({**base, "name": robust.name, "adaptive": robust_info["defense"]},
                           robust))
    aligner = instantiate(cfg.align, device=inp.device)
    store = EmbeddingStore(Path(cfg.paths.cache_dir) / "embeddings")
    conditions = [(f"protected, {s}", posted, s) for s in inp.scrapes]
    if clean is not None:
        conditions.append(("unprotected", clean, "as posted"))
    out = {"posted": str(posted.folder), "probe": str(probe.folder),
           "clean": str(clean.folder) if clean else None, "distractors": str(root),
           "n_distractor_identities": len(distractor_set.identities),
           "unreadable": posted.skipped + probe.skipped + (clean.skipped if clean else []),
           "models": [], "notes": [], "fpirs": list(FPIRS)}
    best = None
    for info, extractor in models:
        name, spec = info["name"], info["crop"]
        d_photos = [p for pics in distractor_set.identities.values() for p in pics]
        d_crops, _, _ = face_crops(d_photos, spec, aligner)
        d_emb = store.embed(extractor, d_crops, inp.progress)
        d_labels = np.array([p.identity for p in d_crops])
        probe_crops, probe_lost, probe_notes = face_crops(probe.pictures, spec, aligner)
        if not probe_crops:
            raise ValueError(f"no face found in any probe photo ({probe.folder}) for {name}: "
                             + "; ".join(f"{x['photo']}: {x['reason']}" for x in probe_lost[:3]))
        probe_emb = store.embed(extractor, probe_crops, inp.progress)
        model = {**info, "crop": spec["kind"], "probes_without_face": probe_lost,
                 "notes": probe_notes, "conditions": []}
        kept = {"probe": probe_emb}
        for label, photos, scrape in conditions:
            pics = [scraped(p, SCRAPES[scrape]) for p in photos.pictures]
            crops, lost, notes = face_crops(pics, spec, aligner)
            entry = {"condition": label, "scrape": scrape, "photos": len(pics),
                     "without_face": lost, "notes": notes}
            if crops:
                emb = store.embed(extractor, crops, inp.progress)
                if label == "unprotected":
                    kept["clean"] = emb
                entry.update(search_person(emb, probe_emb, d_emb, d_labels).as_dict())
            else:  # no face left after the scrape: nothing of the person is searchable
                entry.update({"n_posted": 0, "n_probes": len(probe_emb), "rank1": 0.0,
                              "rank_k": {}, "tpir": {}, "thresholds": [], "probes": [],
                              "stranger_median": None})
            model["conditions"].append(entry)
        out["models"].append(model)
        median = next((c["stranger_median"] for c in model["conditions"] if c.get("stranger_median")),
                      None)
        if median is not None and (best is None or info["date"] > best[0]):
            best = (info["date"], kept, median)
    if best is not None:
        out["notes"] += consistency(best[1], best[2])
    if sweep is not None:
        out["detectors"] = detector_verdicts(sweep, posted, clean, aligner)
    if mislabelled:
        out["notes"].append(f"{len(mislabelled)} distractor photos left out: the same picture "
                            "under two identities (a labelling error would set the stranger "
                            "threshold at distance 0): " + ", ".join(mislabelled[:6]))
    if len(posted.pictures) == 1:
        out["notes"].append("one posted photo: each verdict rests on a single gallery picture")
    if clean is None:
        out["notes"].append("without --clean the audit cannot tell a protection that works from "
                            "probe photos of someone else")
    else:
        from facecure.app import budget_lpips

        out["budgets"] = budgets(posted, clean, budget_lpips(cfg))
    out["wall_s"] = time.time() - started
    out["threads"] = torch.get_num_threads()
    return out
