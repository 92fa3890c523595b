"""White-box sanity on the embedded data, with the real zoo recipes (minutes each: `slow`).

Each attack, at its strongest official mode, against its own surrogate(s) as the model
trainer's extractor must protect (mean protection rate >= 0.8) within its budget, while the
same attackers posting clean pictures are recognised about as often as everyone else. If these
fail, the renderer, the zoo training or the attack is wrong: find out which, do not tune.
"""
import os

import pytest

from facecure.app import run
from facecure.paths import PROJECT_ROOT

# Zoo weights are fingerprinted by their recipe: reuse the project's trained members.
ZOO_CACHE = os.environ.get("FACECURE_ZOO_CACHE", str(PROJECT_ROOT / ".cache" / "zoo"))

CASES = {
    # attack: (trainer's extractor, overrides)
    "fawkes_v10": ("zoo_softmax", ["attack.mode=high", "attack.surrogates=[zoo_softmax]"]),
    # v0.3's strongest official mode is ultra (DSSIM 0.01, 1000 steps); `high` reached 0.70 here.
    "fawkes_v03": ("zoo_softmax", ["attack.mode=ultra", "attack.surrogates=[zoo_softmax]",
                                   "attack.image_size=null"]),
    # No AlexNet ImageNet weights on this machine: LowKey runs with its stated DSSIM stand-in.
    "lowkey": ("zoo_ir_arcface", ["attack.perceptual=dssim", "attack.image_size=null"]),
}


def aggregate_of(records, attack):
    return next(r for r in records if r["kind"] == "aggregate" and r["attack"] == attack)


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(CASES))
def test_whitebox_attack_protects_and_clean_matches_error_rate(compose_cfg, tmp_path, attack):
    extractor, overrides = CASES[attack]
    cfg = compose_cfg(f"extractor={extractor}", f"attack={attack}", *overrides, "n_attackers=5",
                      "progress=false", f"+run_dir={tmp_path}")
    cfg.paths.zoo_dir = ZOO_CACHE
    records = run(cfg)
    cloaked, clean = aggregate_of(records, attack), aggregate_of(records, "none")
    assert cloaked["protection_rate_mean"] >= 0.8
    if attack == "fawkes_v10":
        assert cloaked["linf_max"] <= 15 / 255 + 1e-6
        assert cloaked["dssim_max"] <= 1.1 * 0.017 + 1e-3  # kept within 1.1 th; 8-bit rounding
    if attack == "fawkes_v03":
        assert cloaked["dssim_max"] <= 1.1 * 0.01 + 1e-3  # ultra's threshold; 8-bit rounding
    # Attackers posting clean pictures: their error is the model's clean error rate.
    assert clean["clean_accuracy"] >= 0.85
    assert abs(clean["protection_rate_mean"] - (1 - clean["clean_accuracy"])) <= 0.15
