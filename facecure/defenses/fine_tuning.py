"""Fine-tuning an extractor end to end with a linear identity head: the library the adaptive
trainer (`defense=robust`) and the end-to-end classifier (`defense=end_to_end`) share.

Cross-entropy with random horizontal flips, a user drawn uniformly then one of their pictures
(as the released `train_robust_features.py`), AdamW; the fit is cached and resumable
(`facecure.utils.cached_fit`) by a fingerprint of everything that shapes it.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, seed_everything
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from facecure.attacks.base import Attack, NoAttack
from facecure.data.dataset import Picture
from facecure.defenses.context import DefenseContext
from facecure.evaluation.protection import perturb_users
from facecure.extractors.base import Extractor, resize, to_tensor
from facecure.extractors.training import fit_resumable
from facecure.utils.cached_fit import cached_fit

log = logging.getLogger(__name__)

# What shapes a fine-tune, besides its data (checkpoint_every and validation_users only say how
# it is run). The invariance settings and freeze_bn came later: they enter the key only when
# they leave the value every fit had before they existed, so those models keep their keys.
RECIPE_KEYS = ("steps", "batch_size", "lr_backbone", "lr_head", "weight_decay", "flip",
               "freeze_bn", "ce_weight", "distill_weight", "pair_weight", "validation_users")
_KEYED_UNLESS = {"freeze_bn": False, "ce_weight": 1.0, "distill_weight": 0.0, "pair_weight": 0.0,
                 "validation_users": 0}
RECIPE_VERSION = 1  # bump when the training code changes what a recipe produces


def recipe_of(settings: dict) -> dict:
    """What shapes a fine-tune (for its cache fingerprint)."""
    return {k: settings[k] for k in RECIPE_KEYS if k in settings
            and not (k in _KEYED_UNLESS and settings[k] == _KEYED_UNLESS[k])}


def resized(picture: Picture, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1], resized as `Extractor.embed` does."""
    return resize(to_tensor(picture.load()), size)


class PictureSet(Dataset):
    """Labelled pictures, loaded and resized to the extractor's input size on use.

    With `sources` (a perturbed twin's key -> its clean picture) an item also carries the clean
    picture it came from (itself for a clean one) and whether it is a twin, for the
    invariance terms of `FineTuner`.
    """

    def __init__(self, groups: dict[str, list[Picture]], size: int,
                 sources: dict[str, Picture] | None = None):
        self.classes = sorted(groups)
        self.pictures = [p for c in self.classes for p in groups[c]]
        self.labels = [k for k, c in enumerate(self.classes) for _ in groups[c]]
        labels = np.array(self.labels)
        self.members = [np.flatnonzero(labels == k) for k in range(len(self.classes))]
        self.size, self.sources = size, sources

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, i):
        picture = self.pictures[i]
        x = resized(picture, self.size)
        if self.sources is None:
            return x, self.labels[i]
        source = self.sources.get(picture.key)
        return (x, self.labels[i], x if source is None else resized(source, self.size),
                source is not None)


class IdentitySampler(Sampler):
    """`n` indices: a class drawn uniformly, then one of its pictures; seeded per epoch, so a
    resumed run draws what the killed one would have."""

    def __init__(self, members: list[np.ndarray], n: int, seed: int):
        if any(len(m) == 0 for m in members):
            raise ValueError("every class needs at least one picture to sample from")
        self.members, self.n, self.seed, self.epoch = members, n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, 5, self.epoch])
        for c in rng.integers(len(self.members), size=self.n):
            yield int(self.members[c][rng.integers(len(self.members[c]))])

    def __len__(self) -> int:
        return self.n


class FineTuner(LightningModule):
    """An extractor (trained end to end) + a linear identity head, cross-entropy.

    The head reads the extractor's features before L2 normalisation, as the zoo's own softmax
    heads do: on unit-norm features a plain linear head's logits stay small and learn slowly.

    Beyond the paper's recipe (cross-entropy only), two invariance terms for batches from a
    `PictureSet` with sources: `distill_weight` pulls every picture's embedding to the frozen
    base extractor's embedding of its clean source (clean pictures keep the base's features,
    twins learn to land where their clean picture does), `pair_weight` pulls a twin's embedding
    to the trained model's own embedding of its clean source. Both use 1 - cosine similarity.
    """

    def __init__(self, extractor: Extractor, n_classes: int, lr_backbone: float = 1e-4,
                 lr_head: float = 1e-3, weight_decay: float = 0.0, flip: bool = True,
                 freeze_bn: bool = False, ce_weight: float = 1.0, distill_weight: float = 0.0,
                 pair_weight: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["extractor"])
        self.extractor = extractor
        self.head = nn.Linear(extractor.embedding_dim, n_classes)
        # The teacher sits in a list: not a submodule, so it is neither trained, switched to
        # train mode by Lightning, nor written to checkpoints (it is the base, rebuilt on resume).
        self._teacher = [copy.deepcopy(extractor).eval().requires_grad_(False)] if distill_weight else []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor.features(self.extractor.preprocess(x)))

    def on_train_epoch_start(self) -> None:
        # freeze_bn: BatchNorm keeps the pre-trained statistics (Lightning sets train mode
        # before each epoch, so this runs after it); its affine weights still train.
        if self.hparams.get("freeze_bn"):
            for m in self.extractor.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def on_fit_start(self) -> None:
        for teacher in self._teacher:
            teacher.to(self.device)

    def embedding(self, model: Extractor, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.features(model.preprocess(x)), dim=1)

    def training_step(self, batch, batch_idx):
        x, labels, *paired = batch
        hp = self.hparams
        if hp.flip:  # a twin and its clean source flip together
            flip = (torch.rand(x.shape[0], device=x.device) < 0.5).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
            if paired:
                paired[0] = torch.where(flip, paired[0].flip(3), paired[0])
        features = self.extractor.features(self.extractor.preprocess(x))
        logits = self.head(features)
        loss = hp.ce_weight * F.cross_entropy(logits, labels)
        if paired and (hp.distill_weight or hp.pair_weight):
            source, is_twin = paired
            embedded = F.normalize(features, dim=1)
            if hp.distill_weight:
                with torch.no_grad():
                    target = self.embedding(self._teacher[0], source)
                distill = (1 - (embedded * target).sum(1)).mean()
                self.log("train/distill", distill)
                loss = loss + hp.distill_weight * distill
            if hp.pair_weight and is_twin.any():
                own = self.embedding(self.extractor, source[is_twin])
                pair = (1 - (embedded[is_twin] * own).sum(1)).mean()
                self.log("train/pair", pair)
                loss = loss + hp.pair_weight * pair
        self.log("train/loss", loss, prog_bar=True)
        if hp.ce_weight:  # without cross-entropy the head never trains
            self.log("train/acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True)
        return loss

    def configure_optimizers(self):
        groups = [{"params": self.extractor.parameters(), "lr": self.hparams.lr_backbone},
                  {"params": self.head.parameters(), "lr": self.hparams.lr_head}]
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def predict(self, pictures: list[Picture], batch_size: int = 256) -> np.ndarray:
        """Class index of each picture (eval mode, no flip)."""
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(pictures), batch_size):
            x = torch.stack([resized(p, self.extractor.input_size)
                             for p in pictures[start:start + batch_size]])
            out.append(self.logits(x.to(device)).argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, int)


def trainable_copy(base: Extractor, defense: str) -> Extractor:
    """A deep copy of the trainer's extractor with every weight trainable (attacks freeze
    their surrogates, and the trainer's extractor may be one)."""
    if not base.differentiable:
        raise ValueError(f"defense={defense} fine-tunes the trainer's extractor, but {base.name!r} "
                         "is not differentiable (ONNX/black-box): choose a torch extractor")
    copied = copy.deepcopy(base).requires_grad_(True)
    if not any(True for _ in copied.parameters()):  # a fine-tune of nothing: only its head
        raise ValueError(f"defense={defense} fine-tunes the trainer's extractor, but {base.name!r} "
                         "has no parameters to train (its weights are buffers)")
    return copied


def fine_tune(prepare: Callable[[], tuple[FineTuner, PictureSet]], settings: dict, seed: int,
              cache_dir: Path, prefix: str, key: dict, part: nn.Module,
              trainer_kwargs: dict | None = None) -> str:
    """Fine-tune unless the cache holds the trained state of `part` under `key`; either way
    `part` ends up with it. `prepare()` gives the module (holding `part`) and its data, made only
    when there is something to train. Returns the fit's fingerprint."""

    def fit(work: Path) -> None:
        module, data = prepare()
        seed_everything(seed, workers=True, verbose=False)
        per_epoch = min(int(settings["checkpoint_every"]), int(settings["steps"]))
        sampler = IdentitySampler(data.members, per_epoch * int(settings["batch_size"]), seed)
        loader = DataLoader(data, batch_size=int(settings["batch_size"]), sampler=sampler)
        kwargs = {**(trainer_kwargs or {}), "max_steps": int(settings["steps"])}
        module.train()  # the copied extractor is in eval mode, and Lightning keeps modes as found
        fit_resumable(module, loader, math.ceil(settings["steps"] / per_epoch), work, kwargs)

    fitted = cached_fit(cache_dir, prefix, key, fit,
                        lambda: {k: v.cpu() for k, v in part.state_dict().items()}, trainer_kwargs)
    part.load_state_dict(fitted.state)
    part.eval()
    return fitted.fingerprint


def train_attacks(ctx: DefenseContext, names) -> list[Attack]:
    """The attacks the trainer runs on public users: config names, or {name: ..., overrides}
    mappings; null means the run's own attack."""
    return [attack for _, attack in ctx.named_attacks(names)]


def public_pairs(ctx: DefenseContext, attacks: list[Attack]
                 ) -> tuple[dict[str, list[Picture]], dict[str, Picture]]:
    """Each public user's pictures (train and test parts) and their perturbed twins, and each
    twin's clean source (by the twin's key)."""
    clean = ctx.public_pictures()
    groups = {i: [] for i in ctx.public.identities}
    for p in clean:
        groups[p.identity].append(p)
    sources = {}
    # perturb_users keeps a mixed attack's parts apart, so match twins to sources by name.
    by_name = {(p.identity, p.name): p for p in clean}
    for attack in attacks:
        if isinstance(attack, NoAttack):
            continue
        twins, _ = perturb_users(attack, clean, ctx.perturbed, ctx.progress)
        for p in twins:
            groups[p.identity].append(p)
            source = by_name.get((p.identity, p.name))
            if source is not None and source.key != p.key:
                sources[p.key] = source
    return groups, sources


def public_groups(ctx: DefenseContext, attacks: list[Attack]) -> dict[str, list[Picture]]:
    """Each public user's pictures (train and test parts) and their perturbed twins."""
    return public_pairs(ctx, attacks)[0]
