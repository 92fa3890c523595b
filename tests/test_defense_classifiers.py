"""defense=linear and defense=end_to_end: classifiers instead of the 1-NN (App. C.1)."""
import numpy as np
import pytest
import torch
from conftest import TINY
from test_defense_robust import run_context

from facecure.app import run
from facecure.defenses.classifiers import fit_linear, measure
from facecure.results import read_results


def records(tmp_path, compose_cfg, *overrides):
    run(compose_cfg(*TINY, *overrides, f"+run_dir={tmp_path}"))
    written = read_results(tmp_path / "results.jsonl")
    return ([r for r in written if r["kind"] == "attacker"],
            [r for r in written if r["kind"] == "aggregate"])


@pytest.mark.parametrize("overrides", [
    ["defense=linear"],
    ["defense=linear", "defense.robust_public=true"],
    ["defense=end_to_end", "defense.steps=6", "defense.checkpoint_every=3"],
], ids=["linear", "linear_robust_public", "end_to_end"])
def test_classifier_run_records(compose_cfg, tmp_path, cache_dir, overrides):
    kind = overrides[0].split("=")[1]
    attackers, aggregates = records(tmp_path, compose_cfg, *overrides)
    assert len(attackers) == 8  # (1-NN, classifier) x (clean baseline, fawkes_v10) x 2 attackers
    assert {r["defense"] for r in attackers} == {"none", kind}
    assert all(0 <= r[k] <= 1 for r in attackers for k in ("protection_rate", "clean_accuracy"))
    mine = [a for a in aggregates if a["defense"] == kind]
    assert {a["attack"] for a in mine} == {"none", "fawkes_v10"}
    assert all(a["classifier"] == kind and a["n_attackers"] == 2 for a in mine)
    rows = [r for r in attackers if r["defense"] == kind]
    assert all(r["robust_public"] == ("defense.robust_public=true" in overrides) for r in rows)
    assert all(r["n_perturbed"] == (r["n_train"] if r["attack"] == "fawkes_v10" else 0)
               for r in rows)
    if "defense.robust_public=true" in overrides and kind == "linear":  # on the robust extractor
        assert all(r["robust_extractor"] == "zoo_softmax+robust" for r in rows)
        assert all(r["extractor_fingerprint"].startswith("zoo_softmax+robust-") for r in rows)
    if kind == "end_to_end":  # a clean and an attacked fine-tune, cached
        assert len(list((cache_dir / "defenses").glob("zoo_softmax+end_to_end-*.pt"))) >= 2


def test_linear_fit_separates_and_repeats():
    torch.manual_seed(0)
    centres = torch.randn(5, 16) * 3
    y = torch.arange(5).repeat_interleave(10)
    x = centres[y] + torch.randn(50, 16)
    w, b = fit_linear(x, y, 5, 1e-4, 200)
    assert ((x @ w.T + b).argmax(1) == y).float().mean() == 1
    w2, b2 = fit_linear(x, y, 5, 1e-4, 200)
    torch.testing.assert_close(w, w2)
    torch.testing.assert_close(b, b2)


@pytest.mark.parametrize("per_attacker", [True, False])
def test_attackers_alone_or_all_at_once(compose_cfg, monkeypatch, tmp_path, per_attacker):
    """Which training sets the classifier sees: one per attacker (that attacker perturbing),
    or one with every attacker perturbing; plus the clean one."""
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, "defense=linear")
    clean_keys = {i: {p.key for p in ctx.split.train[i]} for i in ctx.split.identities}
    seen = []

    def classify(groups, test):  # perfect on clean users, always wrong on perturbing ones
        perturbed = {c for c in ctx.split.identities if {p.key for p in groups[c]} != clean_keys[c]}
        seen.append(perturbed)
        return np.array([ctx.public.identities[0] if p.identity in perturbed else p.identity
                         for p in test])

    result = measure(ctx, classify, per_attacker, {})
    expected = [set()] + ([{a} for a in ctx.attackers] if per_attacker else [set(ctx.attackers)])
    assert seen == expected
    assert [o.protection_rate for o in result.outcomes] == [1.0] * len(ctx.attackers)
    assert [o.protection_rate for o in result.clean_outcomes] == [0.0] * len(ctx.attackers)
    # Clean accuracy is over users who are not perturbing in that classifier.
    assert all(o.clean_accuracy == 1.0 for o in result.outcomes + result.clean_outcomes)
    assert all(len(result.budgets[a]) == o.n_perturbed == len(ctx.split.train[a])
               for a, o in zip(ctx.attackers, result.outcomes))


def test_attack_none_trains_the_clean_classifier_only(compose_cfg, monkeypatch, tmp_path):
    no_attack = [o for o in TINY if not o.startswith("attack.")] + ["attack=none"]
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, "defense=linear", base=no_attack)
    calls = []

    def classify(groups, test):
        calls.append(groups)
        return np.array([p.identity for p in test])

    result = measure(ctx, classify, True, {})
    assert len(calls) == 1  # posting clean pictures: the attacked classifier is the clean one
    assert all(o.protection_rate == 0 for o in result.outcomes + result.clean_outcomes)
