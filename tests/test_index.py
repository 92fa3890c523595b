"""The approximate indexes (index=ivf, index=hnsw): FAISS's own, with their recall measured."""
import numpy as np
import pytest

from facecure.evaluation import ApproximateL2Index, FlatL2Index, NearestNeighbourEvaluator


def clustered(n_ids=40, per=10, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, d)) * 3
    labels = np.repeat(np.arange(n_ids), per)
    x = centres[labels] + rng.normal(size=(len(labels), d))
    return x.astype(np.float32), labels


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_recall_is_measured_against_an_exact_search(kind):
    gallery, _ = clustered()
    queries, _ = clustered(seed=1)
    index = ApproximateL2Index(kind, device="cpu", nlist=16, nprobe=1, ef_search=16,
                               recall_sample=200)
    assert index.recall_at_1 is None  # nothing searched yet
    dist, idx = index.search(gallery, queries, 3)
    exact, _ = FlatL2Index("cpu").search(gallery, queries, 1)
    rng = np.random.default_rng([0, len(gallery), len(queries)])
    sample = rng.choice(len(queries), 200, replace=False)
    expected = np.mean(dist[sample, 0] <= exact[sample, 0] * (1 + 1e-5) + 1e-6)
    assert index.recall_at_1 == pytest.approx(expected) and 0.3 < index.recall_at_1 <= 1
    assert dist.shape == idx.shape == (len(queries), 3)


def test_more_probes_recall_more_and_all_probes_are_exact():
    gallery, _ = clustered(n_ids=80, per=10)
    queries, _ = clustered(n_ids=80, per=10, seed=1)
    recalls = []
    for nprobe in (1, 20):  # 20 cells = all of them: an exhaustive search
        index = ApproximateL2Index("ivf", device="cpu", nlist=20, nprobe=nprobe)
        index.search(gallery, queries, 1)
        recalls.append(index.recall_at_1)
    assert recalls[0] < recalls[1] == 1.0
    assert FlatL2Index("cpu").recall_at_1 is None


def test_the_evaluator_runs_on_an_approximate_index():
    gallery, g = clustered()
    queries, q = clustered(seed=1)
    names_g, names_q = [f"u{i}" for i in g], [f"u{i}" for i in q]
    flat = NearestNeighbourEvaluator(gallery, names_g, queries, names_q, FlatL2Index("cpu"))
    index = ApproximateL2Index("hnsw", device="cpu", ef_search=256)
    approx = NearestNeighbourEvaluator(gallery, names_g, queries, names_q, index)
    swap = queries[:3] + 10
    a, b = flat.outcome("u1", swap), approx.outcome("u1", swap)
    assert index.recall_at_1 > 0.9 and abs(a.protection_rate - b.protection_rate) <= 0.2


def test_bad_settings():
    with pytest.raises(ValueError, match="ivf or hnsw"):
        ApproximateL2Index("lsh")
    with pytest.raises((ValueError, RuntimeError)):
        ApproximateL2Index("hnsw", device="gpu")


def test_a_run_on_an_approximate_index_records_its_recall(compose_cfg, tmp_path):
    from conftest import TINY

    from facecure.app import run
    from facecure.report import build_report
    from facecure.results import read_results

    run(compose_cfg(*TINY, "index=hnsw", f"+run_dir={tmp_path / 'hnsw'}"))
    aggregates = [r for r in read_results(tmp_path / "hnsw" / "results.jsonl")
                  if r["kind"] == "aggregate"]
    assert {r["index"] for r in aggregates} == {"hnsw"}
    assert all(0 < r["index_recall_at_1"] <= 1 for r in aggregates)
    assert "[hnsw, recall@1 " in build_report(tmp_path).read_text()
