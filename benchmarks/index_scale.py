"""`make bench`: the one-search evaluator at internet scale, flat vs IVF vs HNSW, in one run.

    .venv/bin/python -m benchmarks.index_scale [--gallery 1000000 --queries 10000 --dim 512]

Gallery rows are unit vectors around identity centres (`--per-id` pictures each, as a face
model's embeddings cluster), queries other pictures of the same identities. For each index:
the build (train + add) time, the evaluator's whole pass (its first search, the re-searches of
`--attackers` attackers' queries, the open-set sample), the resident memory the index adds,
and recall@1 against the exact search over every query (not only the records' sample). The
exact pass is set beside the machine's matrix-multiply rate (torch GEMM of the same shapes):
the physical limit of an exact search. Times: time.perf_counter of each whole step, once.
"""
from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np
import torch

from facecure.evaluation import FlatL2Index, NearestNeighbourEvaluator
from facecure.evaluation.index import ApproximateL2Index


def rss_gib() -> float:
    """This process's resident memory now (Linux /proc), GiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def data(n: int, n_queries: int, dim: int, per_id: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_ids = max(2, n // per_id)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = 0.7 / np.sqrt(dim)  # within-identity noise a little under the centres' distance
    g_lab = np.repeat(np.arange(n_ids), per_id)[:n]
    gallery = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):  # in chunks: no second copy of a 2 GB matrix
        e = min(s + 100_000, n)
        gallery[s:e] = centres[g_lab[s:e]] + spread * rng.standard_normal((e - s, dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    q_lab = rng.integers(0, n_ids, n_queries)
    queries = centres[q_lab] + spread * rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return gallery, g_lab, queries, q_lab


def gemm_rate(n_queries: int, dim: int, cols: int = 100_000) -> float:
    """FLOP/s of torch's GEMM at the exact search's shapes (queries x a gallery block)."""
    a, b = torch.randn(n_queries, dim), torch.randn(dim, cols)
    a @ b  # warm up
    t = time.perf_counter()
    a @ b
    return 2 * n_queries * dim * cols / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gallery", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--per-id", type=int, default=10)
    ap.add_argument("--attackers", type=int, default=20)
    ap.add_argument("--kinds", default="flat,ivf,hnsw")
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=128)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    gallery, g_lab, queries, q_lab = data(args.gallery, args.queries, args.dim, args.per_id)
    print(f"data: {args.gallery:,} x {args.queries:,} x {args.dim}-d, "
          f"{args.gallery // args.per_id:,} identities ({time.perf_counter() - t:.1f} s), "
          f"{torch.get_num_threads()} threads")
    names_g = np.array([f"u{i}" for i in g_lab])
    names_q = np.array([f"u{i}" for i in q_lab])
    attackers = [f"u{i}" for i in q_lab[:args.attackers]]
    rate = gemm_rate(args.queries, args.dim)
    flops = 2 * args.queries * args.gallery * args.dim
    print(f"GEMM rate {rate / 1e9:.0f} GFLOP/s: one exact k=1 pass at that rate "
          f"{flops / rate:.1f} s (the physical limit)")
    exact = None
    print("| index | build s | k=1 search s | evaluator pass s | memory GiB | recall@1 (all) "
          "| recall@1 (records' sample) |\n|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        gc.collect()
        before = rss_gib()
        index = (FlatL2Index("cpu") if kind == "flat" else
                 ApproximateL2Index(kind, "cpu", nlist=args.nlist, nprobe=args.nprobe,
                                    hnsw_m=args.hnsw_m, ef_search=args.ef_search))
        t = time.perf_counter()
        built = index.build(gallery)
        build_s = time.perf_counter() - t
        memory = rss_gib() - before
        t = time.perf_counter()
        _, idx = built.search(queries, 1)
        search_s = time.perf_counter() - t
        if kind == "flat":
            exact = idx[:, 0]
        recall = float((g_lab[idx[:, 0]] == g_lab[exact]).mean()) if exact is not None else None
        del built
        gc.collect()
        t = time.perf_counter()
        ev = NearestNeighbourEvaluator(gallery, names_g, queries, names_q, index,
                                       attackers=attackers)
        ev.outcomes({a: gallery[names_g == a][::-1].copy() for a in attackers})
        pass_s = time.perf_counter() - t
        sample = index.recall_at_1
        print(f"| {kind} | {build_s:.1f} | {search_s:.1f} | {pass_s:.1f} | {memory:.2f} | "
              f"{'-' if recall is None else f'{recall:.4f}'} | "
              f"{'exact' if sample is None else f'{sample:.4f}'} |", flush=True)
        if kind == "flat":
            print(f"(flat's k=1 pass at {flops / search_s / 1e9:.0f} GFLOP/s, "
                  f"{search_s * rate / flops:.2f}x the GEMM limit)")
        del ev
    print("recall@1 (all): the approximate first neighbour is the exact one's identity, over "
          "every query; the records' sample: as the runs measure it (nearest distance equal)")


if __name__ == "__main__":
    main()
