"""Attack throughput on this CPU: pictures per second, batched vs one picture at a time.

Each attack runs `STEPS` optimisation steps (not its mode's full count) on 64x64 synthetic
pictures against the embedded zoo's surrogates (trained on first use); pictures/s for the full
mode is then (pictures / s over STEPS) * STEPS / mode steps. Batched and one-at-a-time runs
use the same pictures in the same process, so their ratio is fair.
"""
from __future__ import annotations

import sys
import time

import torch
from hydra import compose, initialize_config_dir

from facecure.data.synthetic_dataset import synthetic_faces
from facecure.extractors.base import to_tensor
from facecure.factory import ExtractorPool, create_attack
from facecure.paths import CONF_DIR

STEPS, BATCH = 10, 32
ATTACKS = {
    "fawkes_v10": ["attack.mode=high", "attack.image_size=null"],
    "fawkes_v03": ["attack.mode=high", "attack.image_size=null"],
    "lowkey": ["attack.image_size=null", "attack.perceptual=dssim"],  # no AlexNet weights here
    "pgd": ["attack.image_size=null"],
}


def compose_attack(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"attack={name}", *overrides, "progress=false",
                                            "trainer.enable_progress_bar=false"])


def pictures_per_second(attack, x, ids, batch: int) -> float:
    t = time.perf_counter()
    for start in range(0, len(x), batch):
        attack.perturb(x[start:start + batch], ids[start:start + batch])
    return len(x) / (time.perf_counter() - t)


def main(names: list[str]) -> None:
    data = synthetic_faces(BATCH // 4, 4, 64, seed=0, progress=False)
    pics = [p for ps in data.identities.values() for p in ps]
    x = torch.stack([to_tensor(p.load()) for p in pics])
    ids = [p.identity for p in pics]
    print(f"{'attack':<12} {'mode steps':>10} {'batched pic/s':>14} {'single pic/s':>13} {'ratio':>6}")
    for name in names or ATTACKS:
        cfg = compose_attack(name, ATTACKS.get(name, []))
        attack = create_attack(cfg.attack, ExtractorPool(cfg, "cpu"))
        full_steps, attack.steps = attack.steps, STEPS
        attack.perturb(x[:2], ids[:2])  # warm-up: first convolutions pick their kernels
        batched = pictures_per_second(attack, x, ids, BATCH)
        single = pictures_per_second(attack, x[:8], ids[:8], 1)
        scale = STEPS / full_steps
        print(f"{name:<12} {full_steps:>10} {batched * scale:>14.2f} {single * scale:>13.2f} "
              f"{batched / single:>6.1f}", flush=True)
    print(f"(measured over {STEPS} steps on {len(x)} pictures of 64x64, scaled to the mode's steps)")


if __name__ == "__main__":
    main(sys.argv[1:])
