"""attack=noise: the random-noise control; the rule that params() key every setting; a new
protection added from outside FaceCure's tree."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_DATA, TINY_ZOO

from facecure.app import run
from facecure.attacks import RandomNoise
from facecure.attacks.base import Attack
from facecure.paths import PROJECT_ROOT
from facecure.report import build_report
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


EXAMPLE = PROJECT_ROOT / "examples" / "own_protection"  # README's worked example


def test_a_protection_kept_in_its_own_folder_runs_as_attack_and_as_a_defense_s_black_box(
        tmp_path, cache_dir):
    """examples/own_protection: one file and one config outside FaceCure's package and conf/,
    found through PYTHONPATH and hydra.searchpath: the run's attack, and the attack the
    adaptive trainer calls on its public users."""
    out = tmp_path / "run"
    env = {**os.environ, "FACECURE_CACHE": str(cache_dir), "PYTHONPATH": str(EXAMPLE)}
    cmd = [sys.executable, "-m", "facecure.cli", f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]",
           *TINY_ZOO, *TINY_DATA, "n_attackers=2", "progress=false",
           "trainer.enable_progress_bar=false", "attack=blur", "defense=robust",
           "defense.steps=4", "defense.train_attacks=[blur]", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blurred = [r for r in read_results(out / "results.jsonl")
               if r["kind"] == "attacker" and r["attack"] == "blur"]
    assert {r["defense"] for r in blurred} == {"none", "robust"}


MY_ZOO = """_target_: facecure.extractors.zoo.zoo_member
name: my_zoo
info: {role: a researcher's own model, date: "2030-01", zoo: true}
arch: cnn
arch_kwargs: {widths: [8, 16, 16, 32], stem: 8}
loss: softmax
embedding_dim: 32
input_size: 32
cache_dir: ${paths.zoo_dir}
trainer: null
train: {seed: 0, n_identities: 24, pictures_per_identity: 6, image_size: 32, epochs: 1,
        batch_size: 32, lr: 0.003, weight_decay: 0.0005}
"""


def test_an_extractor_kept_in_its_own_folder_is_the_run_s_model_a_surrogate_and_an_era(tmp_path):
    (tmp_path / "conf" / "extractor").mkdir(parents=True)
    (tmp_path / "conf" / "extractor" / "my_zoo.yaml").write_text(MY_ZOO)
    out = tmp_path / "run"
    # a cache of its own: its PGD pictures must not join the session's store other tests count
    env = {**os.environ, "FACECURE_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "facecure.cli", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
           *TINY_DATA, "n_attackers=2", "progress=false", "trainer.enable_progress_bar=false",
           "extractor=my_zoo", "attack=pgd", "attack.steps=2", "attack.image_size=null",
           "attack.surrogates=[my_zoo]", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    attacked = [r for r in read_results(out / "results.jsonl")
                if r["kind"] == "attacker" and r["attack"] == "pgd"]
    assert len(attacked) == 2 and all(r["extractor_date"] == "2030-01" for r in attacked)
    # the report orders it among the eras by the date its run recorded
    assert "| pgd | my_zoo | 2030-01 |" in build_report(out).read_text()
