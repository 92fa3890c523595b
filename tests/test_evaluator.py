import numpy as np
import pytest
import torch

from facecure.evaluation import FlatL2Index, NearestNeighbourEvaluator, summarize


def test_flat_index_is_exact_brute_force():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(500, 24)).astype(np.float32)
    queries = rng.normal(size=(120, 24)).astype(np.float32)
    dist, idx = FlatL2Index("cpu").search(gallery, queries, 5)
    brute = torch.cdist(torch.from_numpy(queries), torch.from_numpy(gallery))
    assert np.array_equal(idx[:, 0], brute.argmin(1).numpy())
    np.testing.assert_allclose(dist[:, 0], brute.min(1).values.numpy() ** 2, rtol=1e-4, atol=1e-4)
    assert np.array_equal(idx, brute.topk(5, largest=False).indices.numpy())


def naive_predictions(gallery, g_labels, queries, attacker, replacement):
    """The gallery rebuilt with the attacker's rows swapped, searched from scratch."""
    keep = np.array([lab != attacker for lab in g_labels])
    full = np.concatenate([gallery[keep], replacement])
    labels = [lab for lab, k in zip(g_labels, keep) if k] + [attacker] * len(replacement)
    _, idx = FlatL2Index("cpu").search(full, queries, 1)
    return [labels[i] for i in idx[:, 0]]


@pytest.mark.parametrize("up_front", [False, True])
@pytest.mark.parametrize("n_replacement", [0, 1, 7, 20])
def test_swap_trick_matches_naive_search(n_replacement, up_front):
    rng = np.random.default_rng(n_replacement)
    ids = [f"u{i}" for i in range(15)]
    g_labels = [ids[i % 15] for i in range(15 * 9)]
    q_labels = [ids[i % 15] for i in range(15 * 4)]
    centres = rng.normal(size=(15, 16)) * 1.5
    gallery = (centres[[ids.index(lab) for lab in g_labels]] + rng.normal(size=(135, 16))).astype(np.float32)
    queries = (centres[[ids.index(lab) for lab in q_labels]] + rng.normal(size=(60, 16))).astype(np.float32)
    # up_front: the attackers named to the evaluator, their re-searches made in one search
    ev = NearestNeighbourEvaluator(gallery, g_labels, queries, q_labels, FlatL2Index("cpu"),
                                   attackers=ids[:5] if up_front else None)
    for attacker in ids[:5]:
        replacement = rng.normal(size=(n_replacement, 16)).astype(np.float32) * 3
        fast = [ev.names[i] for i in ev.predictions_with_swap(attacker, replacement)]
        assert fast == naive_predictions(gallery, g_labels, queries, attacker, replacement)
        outcome = ev.outcome(attacker, replacement)
        mine = [q == attacker for q in q_labels]
        expect = np.mean([f != attacker for f, m in zip(fast, mine) if m])
        assert outcome.protection_rate == pytest.approx(expect)
        assert outcome.n_test == sum(mine)


def test_summary_uses_student_t():
    s = summarize([0.0, 1.0, 1.0, 1.0])
    assert s["mean"] == 0.75 and s["n"] == 4
    assert s["std"] == pytest.approx(0.5)
    assert s["ci95"] == pytest.approx(3.182446 * 0.5 / 2, rel=1e-5)
    assert summarize([0.5])["ci95"] is None


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_swaps_in_one_call_match_the_naive_search(kind, monkeypatch):
    """Every attacker's swap answered from one call (one product for all replacements, the
    re-searches in blocks), replacements of different sizes and none: the naive answer each.
    ivf with every cell visited is exact, and takes the FAISS re-search path."""
    import facecure.evaluation.evaluator as evaluator
    from facecure.evaluation.index import ApproximateL2Index

    monkeypatch.setattr(evaluator, "BLOCK_FLOATS", 2000)  # several blocks of a few queries
    rng = np.random.default_rng(3)
    ids = [f"u{i}" for i in range(12)]
    g_labels = [ids[i % 12] for i in range(12 * 8)]
    q_labels = [ids[i % 12] for i in range(12 * 5)]
    centres = rng.normal(size=(12, 16)) * 1.5
    gallery = (centres[[ids.index(x) for x in g_labels]] + rng.normal(size=(96, 16))).astype(np.float32)
    queries = (centres[[ids.index(x) for x in q_labels]] + rng.normal(size=(60, 16))).astype(np.float32)
    index = FlatL2Index("cpu") if kind == "flat" else ApproximateL2Index("ivf", "cpu", nlist=2, nprobe=2)
    ev = NearestNeighbourEvaluator(gallery, g_labels, queries, q_labels, index)
    # rows near some test pictures (of anyone), so that they steal queries
    swaps = {a: (queries[rng.choice(60, n)] + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)
             for a, n in zip(ids[:5], [3, 0, 9, 1, 8])}
    found = ev.neighbours_with_swaps(swaps)
    outcomes = ev.outcomes(swaps)
    for a, replacement in swaps.items():
        assert [ev.names[i] for i in found[a].label] == naive_predictions(
            gallery, g_labels, queries, a, replacement)
        assert outcomes[a].protection_rate == ev.outcome(a, replacement).protection_rate
        stolen = found[a].row >= len(gallery)  # a replacement row's index, as the naive search's
        if not len(replacement):
            assert not stolen.any()
            continue
        d = ((queries[stolen, None] - replacement[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(found[a].row[stolen] - len(gallery), d.argmin(1))
        np.testing.assert_allclose(found[a].dist[stolen], d.min(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sample", [0, 25, 1000])  # none, some, every query as a non-mated probe
def test_the_open_set_sample_shares_the_first_search_and_changes_no_answer(sample):
    """The sampled queries are searched once, for a top-k that serves both their first
    neighbour and their non-mated distance: the same first neighbours as one k=1 search of
    every query, the same thresholds as the sample searched on its own."""
    from facecure.evaluation.open_set import threshold_at_fpir

    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 16)) * 1.5
    g_id, q_id = np.repeat(np.arange(10), 6), np.repeat(np.arange(10), 6)
    gallery = (centres[g_id] + rng.normal(size=(60, 16))).astype(np.float32)
    queries = (centres[q_id] + rng.normal(size=(60, 16))).astype(np.float32)
    ev = NearestNeighbourEvaluator(gallery, [f"u{i}" for i in g_id], queries, [f"u{i}" for i in q_id],
                                   nonmated_sample=sample, seed=2)
    dist, idx = FlatL2Index("cpu").search(gallery, queries, 1)
    np.testing.assert_array_equal(ev.first.row, idx[:, 0])
    np.testing.assert_allclose(ev.first.dist, dist[:, 0], rtol=1e-6)
    alone = ev.nonmated_distances(sample, seed=2)  # the sample searched again, on its own
    assert len(alone) == min(sample, 60)
    assert [t.distance for t in ev.thresholds] == [threshold_at_fpir(alone, t.fpir).distance
                                                  for t in ev.thresholds]
    assert bool(ev.thresholds) == bool(sample)
