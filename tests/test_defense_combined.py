"""defense=combined: an accurate and a robust model as one system (top-2, confidence threshold,
detector-gated threshold)."""
import json
from collections import defaultdict

import numpy as np
import pytest
from conftest import TINY
from test_zoo import TINY_CLIP

from facecure.app import run
from facecure.config_groups import compose_group
from facecure.defenses.combined import (
    allowed_flags,
    calibrate_cutoff,
    calibrate_threshold,
    recognised,
    reroute,
)
from facecure.evaluation.evaluator import NearestNeighbourEvaluator, Neighbours
from facecure.results import read_results

TINY_ROBUST = "defense.robust_settings={steps:6,checkpoint_every:3}"
TINY_DETECTOR = "defense.detector={model_name:mobilenetv2_035,epochs:1,batch_size:8,input_size:32}"


def test_neighbours_with_swap_is_the_naive_search_with_distances_and_rows():
    rng = np.random.default_rng(0)
    labels = np.repeat([f"u{i}" for i in range(6)], 5)
    gallery = rng.normal(size=(len(labels), 8)).astype(np.float32)
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    truth = rng.choice(labels, 20)
    ev = NearestNeighbourEvaluator(gallery, labels, queries, truth)
    for attacker in ("u0", "u3"):
        for n_rows in (0, 3):
            replacement = rng.normal(size=(n_rows, 8)).astype(np.float32) * 0.5
            got = ev.neighbours_with_swap(attacker, replacement)
            assert (got.label == ev.predictions_with_swap(attacker, replacement)).all()
            # naive: the gallery without the attacker's rows, then the replacement rows
            rows = np.r_[np.flatnonzero(labels != attacker), len(labels) + np.arange(n_rows)]
            swapped = np.r_[gallery, replacement][rows]
            d = ((queries[:, None, :] - swapped[None]) ** 2).sum(-1)
            np.testing.assert_array_equal(got.row, rows[d.argmin(1)])
            np.testing.assert_allclose(got.dist, d.min(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [7, 50, 100, 1001])
@pytest.mark.parametrize("max_rerouted", [0.02, 0.1, 0.5])
def test_calibrated_threshold_reroutes_fewer_than_max_rerouted(n, max_rerouted):
    rng = np.random.default_rng(n)
    distances = np.round(rng.gamma(2.0, size=n), 1)  # rounded: ties too
    threshold = calibrate_threshold(distances, max_rerouted)
    assert (distances > threshold).mean() < max_rerouted
    assert threshold in distances  # an observed distance: no lower one would do
    assert (distances >= threshold).mean() >= max_rerouted or threshold == distances.min()
    with pytest.raises(ValueError, match="max_rerouted"):
        calibrate_threshold(distances, 0)


def test_allowed_flags_is_a_one_sided_binomial_test():
    # 0 of 400 at a 1% budget: P(0 flags | rate 1%) = 0.99^400 = 1.8% <= 5%; one flag: 9%.
    assert allowed_flags(400, 0.01, 0.95) == 0
    assert allowed_flags(100, 0.01, 0.95) == 0  # too few to tell: the strictest cut-off
    # many pictures: about mean - 1.645 sd of Binomial(10000, 0.01) = 100 - 16.4
    assert 82 <= allowed_flags(10000, 0.01, 0.95) <= 84
    assert allowed_flags(10000, 0.01, 0.5) in (99, 100)


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.3])
def test_detector_cutoff_flags_at_most_its_budget_of_held_out_clean_pictures(budget):
    p_clean = np.random.default_rng(0).beta(2, 2, size=400)  # a poor detector: p around 0.5
    cutoff = calibrate_cutoff(p_clean, budget, floor=0.5)
    assert (p_clean > cutoff).mean() <= budget
    assert cutoff >= 0.5
    confident = np.full(100, 0.01)  # a good detector: the detector's own threshold stays
    assert calibrate_cutoff(confident, budget, floor=0.5) == 0.5
    with pytest.raises(ValueError, match="n_test_users"):
        calibrate_cutoff(np.zeros(0), budget, 0.5)


def test_systems_route_as_the_paper_says():
    truth = np.array([0, 1, 2, 3])
    # accurate: right and confident, wrong and far, right but matched to a flagged picture,
    # wrong and confident; the robust model is right on 1, 2, 3 only.
    acc = Neighbours(np.array([0, 9, 2, 9]), np.array([0.1, 5.0, 0.1, 0.2]), np.array([0, 1, 2, 3]))
    rob = Neighbours(np.array([8, 1, 2, 3]), np.zeros(4), np.array([0, 1, 2, 3]))
    flags = np.array([False, False, True, False])
    assert reroute("threshold", acc, 1.0, flags).tolist() == [False, True, False, False]
    assert reroute("detector_gated", acc, 1.0, flags).tolist() == [False, True, True, False]
    thresholded = recognised("threshold", truth, acc, rob, 1.0, flags)
    assert thresholded.tolist() == [True, True, True, False]
    assert recognised("top2", truth, acc, rob, 1.0, None).tolist() == [True, True, True, True]
    gated = recognised("detector_gated", truth, acc, rob, 1.0, flags)
    assert gated.tolist() == [True, True, True, False]


def by_group(records):
    """(defense, system, attack) -> {attacker: record}."""
    out = defaultdict(dict)
    for r in records:
        if r["kind"] == "attacker":
            out[r["defense"], r.get("system"), r["attack"]][r["attacker"]] = r
    return out


def test_combined_run_with_the_robust_fine_tune_and_a_detector(compose_cfg, tmp_path):
    run(compose_cfg(*TINY, "defense=combined", TINY_ROBUST, TINY_DETECTOR,
                    f"+run_dir={tmp_path / 'combined'}"))
    records = read_results(tmp_path / "combined" / "results.jsonl")
    groups = by_group(records)
    systems = ("top2", "threshold", "detector_gated")
    assert set(groups) == {(d, s, a) for d, s in [("none", None), ("robust", None),
                                                  *(("combined", s) for s in systems)]
                           for a in ("none", "fawkes_v10")}
    aggregates = {(r["defense"], r.get("system"), r["attack"]): r
                  for r in records if r["kind"] == "aggregate"}
    for s in systems:
        agg = aggregates["combined", s, "none"]
        assert agg["extractor"] == "zoo_softmax+zoo_softmax+robust"
        assert agg["rerouted_share"] == 1.0 if s == "top2" else 0 <= agg["rerouted_share"] <= 1
        first = next(iter(groups["combined", s, "none"].values()))
        assert first["calibration_rerouted_share"] < first["max_rerouted"] == 0.02
    gated = next(iter(groups["combined", "detector_gated", "none"].values()))
    assert gated["detector_cutoff"] >= 0.5 and gated["detector_clean_flagged"] <= 0.01
    threshold = next(iter(groups["combined", "threshold", "none"].values()))
    assert gated["threshold"] >= threshold["threshold"]  # half the budget: a higher threshold
    for attack in ("none", "fawkes_v10"):  # top-2 recognises whatever either model does
        for a, top2 in groups["combined", "top2", attack].items():
            for single in ("none", "robust"):
                r = groups[single, None, attack][a]
                assert top2["clean_accuracy"] >= r["clean_accuracy"]
                assert top2["protection_rate"] <= r["protection_rate"]

    # The single models' numbers are the ones defense=robust measures on the same users.
    run(compose_cfg(*TINY, "defense=robust", "defense.steps=6", "defense.checkpoint_every=3",
                    f"+run_dir={tmp_path / 'robust'}"))
    alone = by_group(read_results(tmp_path / "robust" / "results.jsonl"))
    for key in [(d, None, a) for d in ("none", "robust") for a in ("none", "fawkes_v10")]:
        for a, r in alone[key].items():
            mine = groups[key][a]
            assert (mine["protection_rate"], mine["clean_accuracy"], mine["n_perturbed"]) == \
                (r["protection_rate"], r["clean_accuracy"], r["n_perturbed"])


def test_combined_run_with_an_extractor_as_the_robust_model(compose_cfg, tmp_path):
    robust = json.dumps({"name": "zoo_clip", **TINY_CLIP}).replace('"', "")  # Hydra's dict grammar
    no_attack = [o for o in TINY if not o.startswith("attack.")] + ["attack=none"]
    run(compose_cfg(*no_attack, "defense=combined", f"defense.robust={robust}",
                    "defense.systems=[top2,threshold]", f"+run_dir={tmp_path}"))
    records = read_results(tmp_path / "results.jsonl")
    aggregates = {(r["defense"], r.get("system"), r["extractor"]): r
                  for r in records if r["kind"] == "aggregate"}
    assert set(aggregates) == {("none", None, "zoo_softmax"), ("none", None, "zoo_clip"),
                               ("combined", "top2", "zoo_softmax+zoo_clip"),
                               ("combined", "threshold", "zoo_softmax+zoo_clip")}
    assert aggregates["combined", "top2", "zoo_softmax+zoo_clip"]["clean_accuracy"] >= max(
        aggregates["none", None, e]["clean_accuracy"] for e in ("zoo_softmax", "zoo_clip"))


def test_defense_config_follows_its_defaults_list():
    invariant, paper = compose_group("defense", "robust_invariant"), compose_group("defense", "robust")
    assert "defaults" not in invariant
    assert invariant.steps == 2000 and invariant.ce_weight == 0 and invariant.freeze_bn
    assert invariant.lr_backbone == paper.lr_backbone  # inherited from robust.yaml
    assert paper.ce_weight == 1 and paper.steps == 500


def test_combined_run_with_the_invariant_robust_fine_tune(compose_cfg, tmp_path):
    run(compose_cfg(*TINY, "defense=combined", "defense.robust=robust_invariant",
                    "defense.robust_settings={steps:4,checkpoint_every:2}",
                    "defense.systems=[top2,threshold]", f"+run_dir={tmp_path}"))
    extractors = {r["extractor"] for r in read_results(tmp_path / "results.jsonl")
                  if r["kind"] == "aggregate"}
    assert "zoo_softmax+robust_invariant" in extractors
    assert "zoo_softmax+zoo_softmax+robust_invariant" in extractors
