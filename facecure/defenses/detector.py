"""Perturbation detection (paper Section 4.2, Tables 2-3): can the model trainer tell perturbed
pictures from clean ones, and does a detector trained on one attack catch another?

A binary clean-vs-perturbed classifier, MobileNetV2 from timm (ImageNet weights when the
configured local file exists, else trained from scratch; the records say which), fine-tuned
with Adam for a few epochs on public users' clean pictures and their perturbed twins, which
the trainer makes by running the protection tool as a black box. Metrics (accuracy, precision,
recall, AUROC) are measured on other, held-out public users.

`train_detector(ctx, attack)` and `perturbed_probability(detector, pictures)` are the API a
detector-gated system reuses.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facecure.attacks.base import Attack, NoAttack
from facecure.attacks.mixed import leaf_attacks
from facecure.data.dataset import Picture
from facecure.defenses.base import Defense
from facecure.extractors.adapters.weights import (
    file_digest,
    load_checkpoint,
    load_into,
    state_dict_of,
)
from facecure.extractors.base import resize, to_tensor
from facecure.extractors.training import fit_resumable
from facecure.utils.cached_fit import cached_fit

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the training code changes what a recipe produces
WEIGHTS_FORMAT = ("a timm ImageNet state dict for this model (model.safetensors, "
                  "pytorch_model.bin or a .pth checkpoint)")
PUBLISHED = "Hugging Face hub, https://huggingface.co/timm/<model_name>.<tag>"


class Detector(nn.Module):
    """timm classifier with one logit, 'perturbed'; owns its resizing and normalisation."""

    def __init__(self, model: nn.Module, input_size: int, mean, std, init: str):
        super().__init__()
        # channels_last: MobileNetV2's depthwise convolutions train 1.6x faster on CPU
        # (oneDNN; measured, 32 x 128 px, one thread) and use tensor cores under AMP.
        self.model = model.to(memory_format=torch.channels_last)
        self.input_size, self.init = input_size, init
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B,) logits of 'perturbed'."""
        x = resize(x, self.input_size)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.model(x).squeeze(1)


def has_imagenet_weights(settings: dict) -> bool:
    return bool(settings.get("weights")) and Path(settings["weights"]).is_file()


# ImageNet trunks that ship on this machine (`make weights-lpips` converts LPIPS' AlexNet and
# VGG16 into torchvision's `features.N` layout): `model_name=tv_alexnet|tv_vgg16`.
TRUNKS = {"tv_alexnet": ("alexnet", 256), "tv_vgg16": ("vgg16", 512)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TrunkClassifier(nn.Module):
    """A torchvision convolutional trunk, global average pooling, one logit."""

    def __init__(self, arch: str, width: int):
        super().__init__()
        import torchvision

        self.features = getattr(torchvision.models, arch)(weights=None).features
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)  # p = 0.5 for every picture at the start (as below)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _trunk_detector(settings: dict) -> Detector:
    arch, width = TRUNKS[settings["model_name"]]
    model = TrunkClassifier(arch, width)
    init = "scratch"
    if has_imagenet_weights(settings):
        weights = settings["weights"]
        state = state_dict_of(load_checkpoint(weights, "detector", "torchvision "
                                              f"{arch} features (make weights-lpips)", PUBLISHED,
                                              settings.get("weights_only", True)))
        trunk = {k.removeprefix("features."): v for k, v in state.items()
                 if k.startswith("features.")}  # a whole torchvision file: its classifier goes
        load_into(model.features, trunk, weights, "detector", f"torchvision {arch}.features")
        init = "imagenet"
    else:
        log.warning("detector: no ImageNet weights at %s; training %s from scratch",
                    settings.get("weights"), arch)
    return Detector(model, settings["input_size"], IMAGENET_MEAN, IMAGENET_STD, init)


def build_detector(settings: dict) -> Detector:
    """A fresh detector: ImageNet weights from `settings['weights']` if that file exists."""
    import timm

    if settings["model_name"] in TRUNKS:
        return _trunk_detector(settings)
    model = timm.create_model(settings["model_name"], pretrained=False, num_classes=1)
    # A zero head starts every picture at p = 0.5: timm's init of a one-output head (uniform
    # in +-1 over 1280 features for MobileNetV2) starts at logits of +-10, saturating the loss.
    head = model.get_classifier()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    weights = settings.get("weights")
    init = "scratch"
    if has_imagenet_weights(settings):
        checkpoint = load_checkpoint(weights, "detector", WEIGHTS_FORMAT, PUBLISHED,
                                     settings.get("weights_only", True))
        heads = model.pretrained_cfg.get("classifier") or ()
        heads = tuple(f"{h}." for h in ((heads,) if isinstance(heads, str) else heads))
        # The ImageNet head (1000 classes) is dropped; the one-logit head keeps its zeros.
        state = {k: v for k, v in state_dict_of(checkpoint).items() if not k.startswith(heads)}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(heads)})
        load_into(model, state, weights, "detector", f"timm {settings['model_name']}")
        init = "imagenet"
    else:
        log.warning("detector: no ImageNet weights at %s; training %s from scratch",
                    weights, settings["model_name"])
    cfg = model.pretrained_cfg
    return Detector(model, settings["input_size"], cfg.get("mean", (0.485, 0.456, 0.406)),
                    cfg.get("std", (0.229, 0.224, 0.225)), init)


class DetectorModule(LightningModule):
    """Binary cross-entropy on uint8 batches (B, 3, S, S) with labels 1 = perturbed."""

    def __init__(self, detector: Detector, lr: float = 5e-5):
        super().__init__()
        self.save_hyperparameters(ignore=["detector"])
        self.detector = detector

    def training_step(self, batch, batch_idx):
        pictures, labels = batch
        x = pictures.float().div(255)
        # Mirror images: a perturbation is no less a perturbation flipped, a face no less a face.
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.binary_cross_entropy_with_logits(self.detector(x), labels.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def training_settings(settings: dict) -> dict:
    """`settings` with epochs and lr filled in where null, from the recipe of the detector's
    initialisation (`recipes.imagenet`: the paper's fine-tuning; `recipes.scratch`: the
    paper's recipe barely moves a randomly initialised net)."""
    init = "imagenet" if has_imagenet_weights(settings) else "scratch"
    defaults = (settings.get("recipes") or {}).get(init) or {}
    out = {**settings, **{k: v for k, v in defaults.items() if settings.get(k) is None}}
    missing = [k for k in ("epochs", "lr") if out.get(k) is None]
    if missing:
        raise ValueError(f"defense.{missing[0]} is null and defense.recipes.{init} does not set it")
    return out


def recipe(settings: dict) -> dict:
    """What shapes a trained detector, besides its data; the weights file by its content."""
    init = file_digest(settings["weights"]) if has_imagenet_weights(settings) else "scratch"
    keys = ("model_name", "input_size", "epochs", "lr", "batch_size", "seed")
    return {"version": CACHE_VERSION, "init": init, **{k: settings[k] for k in keys}}


def load_or_train(settings: dict, key: dict, data: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                  cache_dir: Path, trainer_kwargs: dict | None = None) -> Detector:
    """The detector of (`settings`, `key`), trained on `data()` -> (clean, perturbed) uint8
    (N, 3, S, S) on first use and cached under `cache_dir`; a killed training resumes."""
    seed_everything(settings["seed"], workers=True, verbose=False)
    detector = build_detector(settings)

    def fit(work: Path) -> None:
        clean, perturbed = data()
        x = torch.cat([clean, perturbed])
        y = torch.cat([torch.zeros(len(clean)), torch.ones(len(perturbed))])
        batch_size = settings["batch_size"]
        # BatchNorm cannot train on a last batch of one picture: drop the remainder.
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                            drop_last=len(x) > batch_size,
                            generator=torch.Generator().manual_seed(settings["seed"]))
        fit_resumable(DetectorModule(detector, settings["lr"]), loader, settings["epochs"], work,
                      trainer_kwargs)

    fitted = cached_fit(Path(cache_dir) / "detector", None, {"recipe": recipe(settings), **key},
                        fit, lambda: {"state_dict": detector.model.state_dict(),
                                      "init": detector.init}, trainer_kwargs, "the detector")
    detector.model.load_state_dict(fitted.state["state_dict"])
    detector.init = fitted.state["init"]
    return detector.eval()


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


def detection_metrics(p_perturbed: np.ndarray, labels: np.ndarray,
                      threshold: float = 0.5) -> dict:
    """Binary accuracy, precision, recall (at `threshold`) and AUROC, with torchmetrics."""
    from torchmetrics.classification import (
        BinaryAccuracy,
        BinaryAUROC,
        BinaryPrecision,
        BinaryRecall,
    )

    p, y = torch.as_tensor(p_perturbed, dtype=torch.float32), torch.as_tensor(labels).long()
    metrics = {"accuracy": BinaryAccuracy(threshold), "precision": BinaryPrecision(threshold),
               "recall": BinaryRecall(threshold), "auc": BinaryAUROC()}
    return {k: float(m(p, y)) for k, m in metrics.items()}


def unchanged_twins(clean: torch.Tensor, perturbed: torch.Tensor, tolerance: int) -> np.ndarray:
    """Twins whose every pixel is within `tolerance`/255 of their clean picture, as the detector
    sees them. Fawkes returns its start when no iterate kept to the budget: such a twin is in
    effect a clean picture, and no detector can tell the two apart."""
    diff = (perturbed.int() - clean.int()).abs().flatten(1).amax(1)
    return (diff <= tolerance).numpy()


def changed_scores(p: np.ndarray, labels: np.ndarray, unchanged: np.ndarray,
                   threshold: float) -> dict:
    """Metrics over the clean pictures and the twins the attack did change (`<metric>_changed`),
    with the share it left unchanged: tells a detector's misses from the attack's no-ops."""
    keep = np.r_[np.ones(len(labels) - len(unchanged), bool), ~unchanged]
    out = {"unchanged_share": float(unchanged.mean()) if len(unchanged) else 0.0}
    if (~unchanged).any():
        scores = detection_metrics(p[keep], labels[keep], threshold)
        out.update({f"{k}_changed": scores[k] for k in ("recall", "auc")})
    return out


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
                    "epochs": settings["epochs"], "lr": settings["lr"],
                    "train_attack_fingerprint": train_attack.fingerprint,
                    "test_attack_fingerprint": test_attack.fingerprint,
                    # A mixed train attack (fawkes_v10_modes): the plain attacks it is made of, so
                    # the report scores it on each of them as on its own attack (Table 2).
                    "train_part_fingerprints": [a.fingerprint for a in leaf_attacks(train_attack)]})
        return records
