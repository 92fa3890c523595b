"""Open-set identification (TPIR at FPIR) against cases computed by hand."""
import numpy as np
import pytest

from facecure.evaluation.open_set import fpir_key, threshold_at_fpir, tpir


def test_threshold_and_tpir_by_hand():
    # 10 non-mated searches: at FPIR 0.2 two may pass, so the threshold is the second smallest
    # distance (0.5); at FPIR 0.1 one (0.3).
    nonmated = np.array([0.9, 0.3, 1.2, 0.5, 2.0, 1.5, 0.8, 1.1, 0.7, 1.9])
    t = threshold_at_fpir(nonmated, 0.2)
    assert t.distance == 0.5 and t.achieved_fpir == 0.2 and t.n_nonmated == 10 and t.resolved
    assert threshold_at_fpir(nonmated, 0.1).distance == 0.3
    # Mated searches: (right identity?, distance). At 0.5: hits at 0.1 and 0.5 pass, the hit at
    # 0.6 does not, the miss at 0.2 never counts: TPIR = 2/5.
    hit = np.array([True, True, True, False, True])
    dist = np.array([0.1, 0.5, 0.6, 0.2, 3.0])
    assert tpir(hit, dist, t) == pytest.approx(2 / 5)
    assert tpir(hit, dist, threshold_at_fpir(nonmated, 0.1)) == pytest.approx(1 / 5)


def test_ties_are_never_split():
    # Two non-mated searches at 0.4: allowing one of ten (FPIR 0.1) would split them, so the
    # threshold falls below both and no non-mated search passes.
    nonmated = np.array([0.4, 0.4, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7])
    t = threshold_at_fpir(nonmated, 0.1)
    assert t.distance < 0.4 and t.achieved_fpir == 0.0
    assert tpir(np.array([True]), np.array([0.4]), t) == 0.0
    t2 = threshold_at_fpir(nonmated, 0.2)
    assert t2.distance == 0.4 and t2.achieved_fpir == 0.2


def test_unresolved_fpir_admits_nothing():
    t = threshold_at_fpir(np.array([0.5, 0.7, 0.9]), 1e-2)  # 3 searches cannot measure 1%
    assert not t.resolved and t.achieved_fpir == 0.0 and t.distance < 0.5


def test_bad_input():
    with pytest.raises(ValueError, match="no non-mated"):
        threshold_at_fpir(np.array([]), 0.01)
    with pytest.raises(ValueError, match="FPIR"):
        threshold_at_fpir(np.array([1.0]), 0.0)
    assert fpir_key(1e-2) == "fpir1e-2" and fpir_key(1e-3) == "fpir1e-3"


def test_evaluator_open_set_matches_naive_searches():
    from facecure.evaluation.evaluator import NearestNeighbourEvaluator

    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(12)]
    g_lab = [i for i in ids for _ in range(rng.integers(2, 6))]
    q_lab = [i for i in ids for _ in range(4)]
    centres = {i: rng.normal(size=8) for i in ids}
    gallery = np.stack([centres[i] + 0.8 * rng.normal(size=8) for i in g_lab]).astype(np.float32)
    queries = np.stack([centres[i] + 0.8 * rng.normal(size=8) for i in q_lab]).astype(np.float32)
    fpirs = (0.05, 0.2)
    ev = NearestNeighbourEvaluator(gallery, g_lab, queries, q_lab, fpirs=fpirs)
    g_lab, q_lab = np.array(g_lab), np.array(q_lab)
    d2 = ((queries[:, None] - gallery[None]) ** 2).sum(-1)
    nonmated = np.array([d2[q][g_lab != q_lab[q]].min() for q in range(len(q_lab))])
    thresholds = [threshold_at_fpir(nonmated, f) for f in fpirs]
    replacement = (centres["u3"] + 3.0 + rng.normal(size=(3, 8))).astype(np.float32)
    out = ev.outcome("u3", replacement)
    # Naive: the gallery with u3's rows swapped, every u3 query searched in it.
    swapped = np.concatenate([gallery[g_lab != "u3"], replacement])
    s_lab = np.concatenate([g_lab[g_lab != "u3"], ["u3"] * 3])
    mine = q_lab == "u3"
    ds = ((queries[mine][:, None] - swapped[None]) ** 2).sum(-1)
    hit, dist = s_lab[ds.argmin(1)] == "u3", ds.min(1)
    for t, f in zip(thresholds, fpirs):
        assert out.open_set[fpir_key(f)] == pytest.approx(1 - tpir(hit, dist, t), abs=1e-6)
    assert out.protection_rate == pytest.approx(1 - hit.mean())


def test_search_person_by_hand():
    from facecure.audit.search import search_person

    # 1-D embeddings. The person's posted rows at 0 and 0.2; distractors a (10, 10.5), b (20, 21),
    # c (30, 31). Non-mated searches: a's photos find b at 10 / 10.5 (squared: 100, 110.25)...
    posted = np.array([[0.0], [0.2]], np.float32)
    distractors = np.array([[10.0], [10.5], [20.0], [21.0], [30.0], [31.0]], np.float32)
    labels = ["a", "a", "b", "b", "c", "c"]
    probes = np.array([[0.1], [9.0], [15.9]], np.float32)  # near the person; near a; between
    r = search_person(posted, probes, distractors, labels, ks=(2,), fpirs=(0.2,))
    # Probe 1: the person (rank 1); probe 2: a (1.0 away) then the person (8.8): rank 2; probe
    # 3: b (4.1), a (5.4), c (14.1), then the person (15.7): rank 4.
    assert [p["rank"] for p in r.probes] == [1, 2, 4]
    assert r.rank1 == pytest.approx(1 / 3) and r.rank_k == {2: pytest.approx(2 / 3)}
    # Non-mated nearest, squared: a's photos 9.8^2 (to the person's 0.2) and 9.5^2 (to b's 20);
    # b's 9.5^2, 10.5^2 (to a's 10.5); c's 9^2, 10^2 (to b's 21). Six searches, FPIR 0.2 admits
    # one: the threshold is 81.
    assert r.thresholds[0]["distance"] == pytest.approx(81.0)
    # Probe 1 is the person at 0.01 <= 81: found; TPIR = 1/3.
    assert r.tpir["fpir2e-1"] == pytest.approx(1 / 3)
    assert r.n_distractor_ids == 3 and r.n_posted == 2
