"""The run: config -> objects -> `measure_protection` -> results.jsonl, table, logger.

`run(cfg)` is what the `facecure` command calls after Hydra composed the config; tests call it
directly with a composed config. The work itself is in plain functions over objects.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import DictConfig, OmegaConf

from facecure.attacks.base import white_box_to
from facecure.attacks.lowkey import alexnet_weights_path, lpips_distance
from facecure.attacks.store import PerturbedStore
from facecure.data import build_dataset
from facecure.data.dataset import Split, choose_attackers, split_dataset
from facecure.defenses import DefenseContext, split_public
from facecure.evaluation.distractors import Distractors
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.evaluation.protection import ProtectionResult
from facecure.faces import align_dataset, crop_spec_of
from facecure.factory import Factory, create_defense
from facecure.paths import CONF_DIR
from facecure.results import (
    aggregate,
    budget_summary,
    machine,
    read_results,
    versions,
    write_results,
)
from facecure.table import print_results
from facecure.utils.io import atomic_write_text, fingerprint
from facecure.worlds import role_of, unavailable, world_name

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no GPU; use device=cpu or device=auto")
    return device


def run_dir_of(cfg: DictConfig) -> Path:
    """The Hydra output folder, or `cfg.run_dir` when called without the Hydra app."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    return Path(HydraConfig.get().runtime.output_dir)


# The labels every record of a run carries that tell its measurements apart (a report row
# each); a defense adds its own (`Defended.labels`). Records list them under "labels".
RUN_LABELS = ("world", "experiment", "attack", "attack_mode", "attack_label", "extractor",
              "defense", "attack_unprotected", "dataset")


def budget_lpips(cfg: DictConfig):
    """LPIPS-Alex for budgets when AlexNet's weights are on this machine, else None."""
    try:
        weights = alexnet_weights_path(cfg.eval.get("alexnet_weights"))
    except FileNotFoundError:
        log.info("AlexNet weights not found: budgets record lpips_mean=null")
        return None
    return lambda x, y: lpips_distance(x, y, weights)


def build_scrape(node):
    """The `scrape` group: None for the paper's protocol (scrape=none)."""
    if node is None or node.get("_target_") is None:
        return None
    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("name", None)  # a label for the records, not a setting
    return instantiate(spec)


def check_attack_inputs(attack, dataset, run_dir: Path) -> None:
    """Fail before any embedding when an attack's outside inputs are not there: the official
    program (fawkes_cli), or a tool's output folder (from_dir), whose orphans are written out."""
    if hasattr(attack, "executable"):
        attack.executable()
    if hasattr(attack, "report"):
        pictures = [p for pics in dataset.identities.values() for p in pics]
        report = attack.report(pictures)
        atomic_write_text(run_dir / "attack_inputs.json", json.dumps(report, indent=1))


def finished_records(run_dir: Path, cfg: DictConfig) -> list[dict] | None:
    """The records of this very job when a previous run finished it (a rerun sweep skips it);
    a folder holding another config's results keeps them aside as results.<fingerprint>.jsonl."""
    path = run_dir / "results.jsonl"
    if not path.exists() or not cfg.get("skip_done", True):
        return None
    records = read_results(path)
    previous = records[0].get("config_fingerprint") if records else None
    if previous == config_fingerprint(cfg):
        log.warning("skipping %s: finished before with the same config (skip_done=false reruns)",
                    run_dir)
        return [r for r in records if r["kind"] != "run"]
    path.rename(run_dir / f"results.{previous}.jsonl")
    return None


def run(cfg: DictConfig) -> list[dict]:
    """Run one (data, extractor, attack) measurement; returns the records it wrote."""
    started = time.time()
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = finished_records(run_dir, cfg)
    if done is not None:
        return done
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    worlds = (cfg.get("experiment_info") or {}).get("worlds") or [world_name(cfg)]
    if world_name(cfg) not in worlds:
        raise ValueError(f"experiment={cfg.experiment_name} runs in the {' and '.join(worlds)} "
                         f"world only, not world={world_name(cfg)}")
    if (reason := unavailable(cfg.extractor)) is not None:
        return not_testable(cfg, run_dir, reason)
    seed_everything(cfg.seed, workers=True, verbose=False)
    device = resolve_device(cfg.device)
    timings = {}

    defense = create_defense(cfg.get("defense"))  # a typo in its settings fails here, not later
    logger = instantiate(cfg.logger)
    name = _run_name(cfg)
    logger.start(run_dir, name, cfg.experiment_name, OmegaConf.to_container(cfg, resolve=True))
    exit_code = 1
    try:
        t = time.time()
        dataset = build_dataset(cfg.data, progress=cfg.progress)
        aligner = None
        if not dataset.aligned:  # real photos: the trainer's extractor gets its own crop
            aligner = instantiate(cfg.align, device=resolve_device(cfg.device))
            dataset = align_dataset(dataset, crop_spec_of(cfg.extractor), aligner, cfg.progress)
        scrape = build_scrape(cfg.get("scrape"))
        if scrape is not None and aligner is None:
            raise ValueError(f"scrape={cfg.scrape.get('name', 'posted')} pastes cloaks back into "
                             f"the photos they were cut from; {dataset.name} are face crops "
                             "already (data.aligned): use scrape=none, or in-the-wild photos")
        split = split_dataset(dataset, cfg.seed, cfg.eval.train_fraction)
        public = Split({}, {})
        if defense.public_fraction:  # the trainer's public users: never attackers, never scored
            public_ids, _ = split_public(split.identities, defense.public_fraction, cfg.seed)
            public = Split({i: split.train.pop(i) for i in public_ids},
                           {i: split.test.pop(i) for i in public_ids})
        attackers = choose_attackers(split.identities, cfg.n_attackers, cfg.seed)
        if dataset.skipped:
            atomic_write_text(run_dir / "skipped.json", json.dumps(dataset.skipped, indent=1))
        if dataset.notes:
            atomic_write_text(run_dir / "notes.json", json.dumps(dataset.notes, indent=1))
        timings["data_s"] = time.time() - t

        t = time.time()
        factory = Factory(cfg, device)
        extractor = factory.get()
        attack = factory.attack(cfg.attack)
        check_attack_inputs(attack, dataset, run_dir)
        timings["models_s"] = time.time() - t

        t = time.time()
        cache = Path(cfg.paths.cache_dir)
        ctx = DefenseContext(
            cfg, split, public, attackers, extractor, attack, factory,
            EmbeddingStore(cache / "embeddings"),
            PerturbedStore(cache / "perturbed", cfg.attack.get("batch_size", 64), device,
                           budget_lpips(cfg), aligner, scrape),
            instantiate(cfg.index), run_dir, device, cfg.progress, cfg.seed,
            cfg.attack.get("unprotected", 0), build_distractors(cfg, split, aligner))
        measured = defense.run(ctx)
        timings["measure_s"] = time.time() - t
        if ctx.perturbed.lost:  # the trainer found no face in these twins after the scrape
            log.warning("%d perturbed picture(s) lost to the trainer (listed in lost.json)",
                        len(ctx.perturbed.lost))
            atomic_write_text(run_dir / "lost.json", json.dumps(ctx.perturbed.lost, indent=1))
        timings["total_s"] = time.time() - started

        date = (cfg.extractor.get("info") or {}).get("date")  # the era the report orders it by
        info = cfg.get("experiment_info") or {}
        common = {"world": world_name(cfg), "experiment": cfg.experiment_name,
                  "extractor": extractor.name, "white_box": white_box_to(attack, extractor.name),
                  "extractor_role": role_of(cfg.get("world"), extractor.name),
                  "experiment_title": info.get("title"), "paper_order": info.get("paper_order"),
                  "extractor_date": str(date) if date else None,
                  "attack_label": cfg.attack.get("label"),
                  "attack_unprotected": cfg.attack.get("unprotected", 0),
                  "extractor_fingerprint": extractor.fingerprint, "defense": "none",
                  "n_public": len(public.identities),
                  "seed": cfg.seed, "dataset": dataset.name, "synthetic": dataset.synthetic,
                  "config_fingerprint": config_fingerprint(cfg),
                  # An approximate index's rows are rows of their own, with its measured recall.
                  "index": ctx.index.kind, "index_recall_at_1": ctx.index.recall_at_1,
                  "distractors": cfg.eval.get("distractors", 0),
                  "distractors_drawn": ctx.distractors.drawn if ctx.distractors else None}
        run_record = {"kind": "run", **common, "n_identities": len(split.identities),
                      "n_pictures": len(dataset), "attackers": attackers, "device": device,
                      "attack_params": attack.params(),
                      "crop": crop_spec_of(cfg.extractor) if aligner else None,
                      "attack_crop": getattr(attack, "crop_spec", None) if aligner else None,
                      "scrape": OmegaConf.to_container(cfg.scrape, resolve=True)
                      if aligner and cfg.get("scrape") else None,
                      "skipped": dataset.skipped, "notes": dataset.notes,
                      "lost": ctx.perturbed.lost, "versions": versions(), "machine": machine(),
                      "timings": timings}
        records = []
        for m in measured:
            if isinstance(m, dict):  # a record of its own kind (the detector's)
                records.append({**common, **m})
                continue
            labels = {**common, "defense": m.defense, "extractor": m.extractor,
                      "extractor_role": role_of(cfg.get("world"), m.extractor),
                      "white_box": white_box_to(attack, m.extractor),
                      "extractor_fingerprint": m.extractor_fingerprint, **m.labels, **m.measured,
                      "labels": [*RUN_LABELS, *(("index",) if ctx.index.kind != "flat" else ()),
                                 *(("distractors",) if ctx.distractors else ()), *m.labels]}
            records += _records(m.result, cfg, attack, labels, split)
        # All at once: a results.jsonl that exists is a finished job (a rerun skips it).
        write_results(run_dir / "results.jsonl", [run_record] + records)
        aggregates = [r for r in records if r["kind"] == "aggregate"]
        for agg in aggregates:
            logger.log_metrics({f"{metric_prefix(agg)}/protection_rate": agg["protection_rate_mean"],
                                f"{metric_prefix(agg)}/clean_accuracy": agg["clean_accuracy"]})
        logger.log_table("attackers", [r for r in records if r["kind"] == "attacker"])
        logger.log_table("aggregates", aggregates)
        print_results(aggregates, run_dir, dataset.synthetic,
                      [r for r in records if r["kind"] == "detector"])
        exit_code = 0
        return records
    finally:
        logger.finish(exit_code)


def build_distractors(cfg: DictConfig, split: Split, aligner) -> Distractors | None:
    """eval.distractors: None at 0; real pictures (aligned like the run's) or drawn rows."""
    n = int(cfg.eval.get("distractors", 0) or 0)
    if n == 0:
        return None
    data = None
    if cfg.eval.get("distractor_data") is not None:
        data = build_dataset(cfg.eval.distractor_data, progress=cfg.progress)
        if not data.aligned:
            if aligner is None:
                aligner = instantiate(cfg.align, device=resolve_device(cfg.device))
            data = align_dataset(data, crop_spec_of(cfg.extractor), aligner, cfg.progress)
    distractors = Distractors(n, int(cfg.eval.get("distractor_pictures", 1)), data, cfg.seed)
    distractors.check_disjoint(split.identities)
    return distractors


def not_testable(cfg: DictConfig, run_dir: Path, reason: str) -> list[dict]:
    """A run whose model has no player in this world (the real world's CLIP): one run record
    that says so, a finished job, so the report lists the experiment as not testable here."""
    log.warning("%s: not testable in the %s world: %s", cfg.experiment_name, world_name(cfg),
                reason)
    info = cfg.get("experiment_info") or {}
    record = {"kind": "run", "world": world_name(cfg), "experiment": cfg.experiment_name,
              "experiment_title": info.get("title"), "paper_order": info.get("paper_order"),
              "extractor": cfg.extractor.get("name"), "not_testable": reason,
              "config_fingerprint": config_fingerprint(cfg), "versions": versions()}
    write_results(run_dir / "results.jsonl", [record])
    return []


def metric_prefix(record: dict) -> str:
    """`eval/<defense>/<model>/<attack>`, plus the system's own labels (alpha=0.6, system=top2):
    a robust run's base and robust models, a WiSE-FT curve's alphas log apart."""
    own = [f"{k}={record[k]}" for k in record.get("labels", ()) if k not in RUN_LABELS
           and record.get(k) is not None and k != "robust_extractor"]
    return "/".join(["eval", record["defense"], record["extractor"], record["attack"], *own])


def _records(result: ProtectionResult, cfg, attack, common, split) -> list[dict]:
    groups = [(cfg.attack.name, cfg.attack.get("mode"), result.outcomes, result.budgets)]
    if cfg.eval.clean_baseline and cfg.attack.name != "none":
        groups.insert(0, ("none", None, result.clean_outcomes, {}))
    out = []
    for attack_name, mode, outcomes, budgets in groups:
        attacker_records = [{
            "kind": "attacker", **common, "attack": attack_name, "attack_mode": mode,
            "attack_fingerprint": attack.fingerprint if attack_name == cfg.attack.name else "none",
            "attacker": o.attacker, "protection_rate": o.protection_rate,
            "clean_accuracy": o.clean_accuracy, "n_test": o.n_test,
            "n_train": len(split.train[o.attacker]), "n_perturbed": o.n_perturbed,
            "unprotected": o.n_gallery_rows - o.n_perturbed,
            "budget": budget_summary(budgets.get(o.attacker, [])),
            "open_set": o.open_set or None,
        } for o in outcomes]
        agg = aggregate(attacker_records)
        if result.thresholds:
            agg["open_set_thresholds"] = [asdict(t) | {"resolved": t.resolved}
                                          for t in result.thresholds]
        out += attacker_records + [agg]
    return out


def config_fingerprint(cfg: DictConfig) -> str:
    """Hash of what decides the numbers: not where files go, how progress shows or is logged.
    A job also reads configs by name (a defense's train attacks, an attack's surrogates), so the
    contents of conf/ are in it too: a rerun sweep never skips a job whose configs changed."""
    spec = OmegaConf.to_container(cfg, resolve=True)
    for key in ("run_dir", "paths", "progress", "logger", "trainer", "skip_done", "fail_fast",
                "experiment_info"):
        spec.pop(key, None)
    return fingerprint({**spec, "conf": conf_tree_fingerprint()})


@functools.cache
def conf_tree_fingerprint(root: Path = CONF_DIR) -> str:
    """Hash of every config file under `root` (links followed), launcher presets aside."""
    files = {}
    for folder, _, names in os.walk(root, followlinks=True):
        rel = Path(folder).relative_to(root)
        if rel.parts[:1] == ("hydra",):
            continue
        files.update({str(rel / n): (Path(folder) / n).read_text() for n in names
                      if n.endswith(".yaml")})
    return fingerprint(dict(sorted(files.items())))


def _run_name(cfg: DictConfig) -> str:
    try:
        overrides = HydraConfig.get().job.override_dirname
    except ValueError:
        overrides = ""
    return f"{cfg.experiment_name}" + (f"/{overrides}" if overrides else "")
