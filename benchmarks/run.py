"""`make bench`: speed and memory of the hot paths, printed as a table (targets, not tests).

Measured with time.perf_counter on this machine; peak memory is the process's max RSS.
"""
from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facecure.data.synthetic_dataset import synthetic_faces
from facecure.evaluation import FlatL2Index, NearestNeighbourEvaluator

REPORT_420 = "facecure-report over a 420-job sweep (16,800 attacker records)"
TARGETS = {"render 10,000 pictures of 64x64": 60.0, REPORT_420: 60.0}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_renderer():
    _, s = timed(lambda: synthetic_faces(500, 20, 64, progress=False))
    return "render 10,000 pictures of 64x64", s


def bench_evaluator(n_ids=500, train=14, test=6, dim=128, attackers=20):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n_ids, dim)).astype(np.float32)
    g_lab = np.repeat(np.arange(n_ids), train)
    q_lab = np.repeat(np.arange(n_ids), test)
    gallery = centres[g_lab] + rng.normal(size=(len(g_lab), dim)).astype(np.float32)
    queries = centres[q_lab] + rng.normal(size=(len(q_lab), dim)).astype(np.float32)
    names_g, names_q = [f"u{i}" for i in g_lab], [f"u{i}" for i in q_lab]
    index = FlatL2Index("cpu")

    def trick():
        ev = NearestNeighbourEvaluator(gallery, names_g, queries, names_q, index)
        for a in range(attackers):
            ev.outcome(f"u{a}", rng.normal(size=(train, dim)).astype(np.float32))

    def naive():
        for a in range(attackers):
            keep = g_lab != a
            g = np.concatenate([gallery[keep], rng.normal(size=(train, dim)).astype(np.float32)])
            index.search(g, queries, 1)

    _, t_trick = timed(trick)
    _, t_naive = timed(naive)
    shape = f"{len(gallery)} gallery x {len(queries)} queries x {dim}, {attackers} attackers"
    return [(f"evaluator, one search ({shape})", t_trick),
            (f"evaluator, naive search per attacker ({shape})", t_naive)]


def bench_embed():
    from facecure.extractors.base import Extractor
    from facecure.extractors.zoo_nets import ZooCNN

    ex = Extractor("bench", ZooCNN(128, (24, 48, 96, 192), 24), 128, 64, fingerprint="bench")
    pics = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2000)]
    _, s = timed(lambda: ex.embed(pics))
    return "embed 2,000 pictures (zoo_softmax architecture, 64x64)", s


def bench_report(extractors=7, attacks=4, seeds=15, attackers=20):
    """The report at the scale of a cluster sweep: 7 eras x 4 attacks x 15 seeds = 420 job
    folders, each with its clean and attacked records of 20 attackers (random rates)."""
    from facecure.report import build_report

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for e in range(extractors):
            for a in range(attacks):
                for seed in range(seeds):
                    job = Path(tmp) / f"extractor=zoo_{e},attack=a{a},seed={seed}"
                    job.mkdir()
                    records = [{"kind": "attacker", "experiment": "oblivious",
                                "extractor": f"zoo_{e}", "extractor_fingerprint": f"zoo_{e}-0",
                                "extractor_date": f"20{10 + e}-01", "defense": "none",
                                "attack": attack, "attack_fingerprint": attack,
                                "attacker": f"u{u}", "seed": seed, "dataset": "synthetic",
                                "protection_rate": float(rng.random()), "clean_accuracy": 0.95,
                                "synthetic": True}
                               for attack in ("none", f"a{a}") for u in range(attackers)]
                    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        _, s = timed(lambda: build_report(tmp))
    return REPORT_420, s


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [bench_renderer(), *bench_evaluator(), bench_embed(), bench_report()]
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  seconds  target")
    for name, seconds in rows:
        target = TARGETS.get(name)
        verdict = "" if target is None else (f"< {target:.0f} s " + ("ok" if seconds < target else "MISSED"))
        print(f"{name:<{width}}  {seconds:7.2f}  {verdict}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
