"""Perturbation detection (paper Section 4.2, Tables 2-3): can the model trainer tell perturbed
pictures from clean ones, and does a detector trained on one attack catch another?

A binary clean-vs-perturbed classifier, MobileNetV2 from timm (ImageNet weights when the
configured local file exists, else trained from scratch; the records say which), fine-tuned
with Adam for a few epochs on public users' clean pictures and their perturbed twins, which
the trainer makes by running the protection tool as a black box. Metrics (accuracy, precision,
recall, AUROC) are measured on other, held-out public users.

`train_detector(ctx, attack)` and `perturbed_probability(detector, pictures)` are the API a
detector-gated system reuses; the network and its training are `detector_model`, the scores
`detection_metrics`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from facecure.attacks.base import Attack, NoAttack
from facecure.attacks.mixed import leaf_attacks
from facecure.data.dataset import Picture
from facecure.defenses.base import Defense
from facecure.defenses.detection_metrics import changed_scores, detection_metrics, unchanged_twins
from facecure.defenses.detector_model import Detector, load_or_train, training_settings
from facecure.extractors.base import resize, to_tensor

log = logging.getLogger(__name__)

# --- pictures -----------------------------------------------------------------------------------

def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float (3, H, W) -> uint8 (3, *size), resized as the perturbed store resizes an attack's input."""
    return (resize(x, size).clamp(0, 1) * 255).round().byte()


def _as_uint8(pictures: Sequence[Picture | np.ndarray], size: int) -> torch.Tensor:
    arrays = [p.load() if isinstance(p, Picture) else p for p in pictures]
    return torch.stack([_resize(to_tensor(a), (size, size)) for a in arrays]) if arrays else \
        torch.empty(0, 3, size, size, dtype=torch.uint8)


def clean_and_perturbed(ctx, attack: Attack, pictures: list[Picture],
                        size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, size, size) clean pictures and their perturbed twins (made or read from the
    perturbed store). Each clean picture is first brought to its twin's size, as the attack saw
    it, so that resampling alone never tells the two apart."""
    from facecure.evaluation.protection import perturb_users  # splits a mixed attack's shares

    twins, _ = perturb_users(attack, pictures, ctx.perturbed, ctx.progress)
    by_name = {(t.identity, t.name): t.load() for t in twins}
    clean, perturbed = [], []
    for p in pictures:
        twin = by_name.get((p.identity, p.name))
        if twin is None:  # lost to the trainer after the scrape (PerturbedStore.lost)
            continue
        clean.append(_resize(_resize(to_tensor(p.load()), twin.shape[:2]).float().div(255),
                             (size, size)))
        perturbed.append(_resize(to_tensor(twin), (size, size)))
    return torch.stack(clean), torch.stack(perturbed)


@torch.no_grad()
def probabilities(detector: Detector, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, 3, H, W) -> probability that each picture is perturbed."""
    detector.eval()
    device = detector.mean.device
    out = [torch.sigmoid(detector(x[i:i + batch_size].to(device).float().div(255))).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.empty(0, dtype=np.float32)


def perturbed_probability(detector: Detector, pictures: Sequence[Picture | np.ndarray],
                          batch_size: int = 256) -> np.ndarray:
    """Probability that each picture (Picture or uint8 (H, W, 3) RGB, any size) is perturbed."""
    return probabilities(detector, _as_uint8(pictures, detector.input_size), batch_size)


# --- users, settings, attacks -----------------------------------------------------------------

def choose_users(public: list[str], n_train: int, n_test: int, seed: int) -> tuple[list, list]:
    """Seeded disjoint (train, test) users among the public ones. With fewer public users than
    n_train + n_test, they are all used, split in the same proportion (at least one each)."""
    if len(public) < 2:
        raise ValueError(f"the detector needs at least 2 public users, the data has {len(public)}: "
                         "raise data.n_identities or defense.public_fraction")
    if n_train + n_test > len(public):
        scaled = int(round(len(public) * n_train / (n_train + n_test)))
        n_train = min(max(scaled, 1), len(public) - 1)
        n_test = len(public) - n_train
    order = np.random.default_rng([seed, 5]).permutation(sorted(public)).tolist()
    return sorted(order[:n_train]), sorted(order[n_train:n_train + n_test])


def input_size_of(settings: dict, attack: Attack, pictures: list[Picture]) -> int:
    """`input_size`, else the size the attack works at (else the pictures' own size) but at
    least `min_input_size`: the network downsamples 32 times, small inputs leave it no room."""
    if settings.get("input_size"):
        return int(settings["input_size"])
    size = int(getattr(attack, "image_size", None) or max(pictures[0].load().shape[:2]))
    return max(size, int(settings.get("min_input_size") or 0))


# --- the defense ------------------------------------------------------------------------------

def _pictures(ctx, users: list[str]) -> list[Picture]:
    return [p for u in users for p in ctx.public.train[u] + ctx.public.test[u]]


def train_detector(ctx, attack: Attack, settings: dict) -> Detector:
    """A detector of `attack`'s pictures, trained on the public train users (cached)."""
    if isinstance(attack, NoAttack):
        raise ValueError("the detector needs an attack that perturbs pictures, not attack=none")
    settings = training_settings(dict(settings))
    train_users, _ = choose_users(ctx.public.identities, settings["n_train_users"],
                                  settings["n_test_users"], settings["seed"])
    pictures = _pictures(ctx, train_users)
    settings["input_size"] = input_size_of(settings, attack, pictures)
    key = {"attack": attack.fingerprint, "pictures": sorted(p.key for p in pictures)}
    detector = load_or_train(settings, key,
                             lambda: clean_and_perturbed(ctx, attack, pictures,
                                                         settings["input_size"]),
                             ctx.cache_dir, ctx.trainer_kwargs)
    return detector.to(ctx.device)


class PerturbationDetection(Defense):
    """`defense=detector`: one record per (train attack, test attack), the transfer table of
    the paper's Table 3. Settings: conf/defense/detector.yaml; `settings` is what
    `train_detector` takes (a detector-gated system builds one of these for its detector)."""

    name = "detector"

    def __init__(self, *, public_fraction: float, model_name: str, weights: str | None,
                 weights_only: bool, n_train_users: int, n_test_users: int, epochs: int | None,
                 lr: float | None, recipes: dict, batch_size: int, input_size: int | None,
                 min_input_size: int, threshold: float, unchanged_tolerance: int, seed: int,
                 train_attacks, test_attacks):
        self.public_fraction = public_fraction
        self.settings = {
            "model_name": model_name, "weights": weights, "weights_only": weights_only,
            "n_train_users": n_train_users, "n_test_users": n_test_users, "epochs": epochs,
            "lr": lr, "recipes": recipes, "batch_size": batch_size, "input_size": input_size,
            "min_input_size": min_input_size, "threshold": threshold,
            "unchanged_tolerance": unchanged_tolerance, "seed": seed,
            "train_attacks": train_attacks, "test_attacks": test_attacks}

    def run(self, ctx) -> list[dict]:
        settings = training_settings(self.settings)
        trains = ctx.named_attacks(settings["train_attacks"])
        tests = trains if settings["test_attacks"] is None else ctx.named_attacks(
            settings["test_attacks"])
        train_users, test_users = choose_users(ctx.public.identities, settings["n_train_users"],
                                               settings["n_test_users"], settings["seed"])
        log.info("detector: %d train and %d test users of %d public ones", len(train_users),
                 len(test_users), len(ctx.public.identities))
        test_pictures = _pictures(ctx, test_users)
        records = []
        for train_label, train_attack in trains:
            detector = train_detector(ctx, train_attack, settings)
            for test_label, test_attack in tests:
                clean, perturbed = clean_and_perturbed(ctx, test_attack, test_pictures,
                                                       detector.input_size)
                p = probabilities(detector, torch.cat([clean, perturbed]))
                labels = np.r_[np.zeros(len(clean)), np.ones(len(perturbed))]
                threshold = settings["threshold"]
                scores = detection_metrics(p, labels, threshold)
                unchanged = unchanged_twins(clean, perturbed, settings["unchanged_tolerance"])
                scores.update(changed_scores(p, labels, unchanged, threshold))
                log.info("detector %s -> %s: %s", train_label, test_label,
                         ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
                records.append({
                    "kind": "detector", "defense": "detector", "train_attack": train_label,
                    "test_attack": test_label, **scores,
                    "n_train_users": len(train_users), "n_test_users": len(test_users),
                    "n_test_pictures": 2 * len(clean), "init": detector.init,
                    "model_name": settings["model_name"], "input_size": detector.input_size,
                    "detector_file": getattr(detector, "file", None),
                    "threshold": settings["threshold"],
                    "epochs": settings["epochs"], "lr": settings["lr"],
                    "train_attack_fingerprint": train_attack.fingerprint,
                    "test_attack_fingerprint": test_attack.fingerprint,
                    # A mixed train attack (fawkes_v10_modes): the plain attacks it is made of, so
                    # the report scores it on each of them as on its own attack (Table 2).
                    "train_part_fingerprints": [a.fingerprint for a in leaf_attacks(train_attack)]})
        return records
