"""attack=noise: the random-noise control, and the rule that params() key every setting."""
import pytest
import torch
from conftest import TINY_DATA, TINY_ZOO

from facecure.app import run
from facecure.attacks import RandomNoise
from facecure.attacks.base import Attack
from facecure.results import read_results


def test_noise_stays_in_budget_and_a_users_twins_ignore_the_batch():
    x = torch.rand(6, 3, 16, 16)
    users = ["a", "a", "a", "b", "b", "c"]
    noise = RandomNoise(epsilon=8 / 255, seed=3)
    out = noise.perturb(x, users)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert (out - x).abs().max() <= 8 / 255 + 1e-6
    # away from the clamp every pixel moves by the whole budget
    inside = (x > 8 / 255) & (x < 1 - 8 / 255)
    assert torch.allclose((out - x).abs()[inside], torch.tensor(8 / 255))
    assert torch.equal(noise.perturb(x[3:5], users[3:5]), out[3:5])  # b alone, same twins
    assert not torch.equal(RandomNoise(seed=4).perturb(x, users), out)
    assert RandomNoise(seed=4).fingerprint != noise.fingerprint
    with pytest.raises(ValueError, match="epsilon"):
        RandomNoise(epsilon=0)


def test_noise_runs_as_an_attack_config(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY_ZOO, *TINY_DATA, "attack=noise", "n_attackers=2", "progress=false",
                      "trainer.enable_progress_bar=false", f"+run_dir={tmp_path}")
    run(cfg)
    noisy = [r for r in read_results(tmp_path / "results.jsonl")
             if r["kind"] == "attacker" and r["attack"] == "noise"]
    assert len(noisy) == 2
    # stored as 8-bit PNG: the budget is measured on what was stored
    assert all(7 / 255 < r["budget"]["linf_max"] <= 9 / 255 for r in noisy)


class Blur(Attack):
    """A new attack whose author forgot one of its settings in params()."""
    name = "blur"

    def __init__(self, sigma: float = 1.0, verbose: bool = False):
        self.sigma, self.verbose = sigma, verbose

    def params(self):
        return super().params()

    def perturb(self, x, identities):
        return x


def test_an_attack_must_key_every_setting():
    with pytest.raises(TypeError, match="leaves out its setting.*sigma, verbose"):
        _ = Blur().fingerprint

    class Keyed(Blur):
        unkeyed = ("verbose",)  # cannot change the pictures

        def params(self):
            return {**super().params(), "sigma": self.sigma}

    assert Keyed(sigma=2).fingerprint != Keyed(sigma=1).fingerprint
