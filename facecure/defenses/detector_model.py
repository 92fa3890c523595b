"""The perturbation detector itself: the network (a timm classifier, or a torchvision trunk
from `make weights-lpips`) with its own resizing and normalisation, its Lightning module, the
recipe by initialisation, and `load_or_train`, which trains it once through `cached_fit`."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facecure.extractors.adapters.weights import (
    file_digest,
    load_checkpoint,
    load_into,
    state_dict_of,
)
from facecure.extractors.base import resize
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
    elif not settings.get("quiet"):
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
    elif not settings.get("quiet"):
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
    detector.file = str(fitted.path)  # the records name it: `facecure audit --adaptive` loads it
    return detector.eval()


def load_detector(path: str | Path, model_name: str, input_size: int) -> Detector:
    """A trained detector from its cache file (a detection record's `detector_file`), loaded
    with weights_only=True; a missing file says which experiment writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector {path} is missing: the detection experiment writes it "
                                "(facecure -m experiment=detection world=real)")
    detector = build_detector({"model_name": model_name, "weights": None, "input_size": input_size,
                               "quiet": True})
    state = torch.load(path, map_location="cpu", weights_only=True)
    detector.model.load_state_dict(state["state_dict"])
    detector.init, detector.file = state["init"], str(path)
    return detector.eval()
