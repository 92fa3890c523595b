"""Training a zoo member: a Lightning module with a classification head on public identities.

The head is thrown away afterwards; the backbone's embedding is the extractor, as for the face
models of the paper (WebFace and FaceNet were trained with a softmax head, Celeb1M and ArcFace
with an angular margin).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facecure.data.synthetic_dataset import synthetic_faces
from facecure.extractors.heads import HEADS

log = logging.getLogger(__name__)


class FaceClassifierModule(LightningModule):
    """Backbone + identity head. Batches are uint8 pictures (B, 3, S, S) and identity labels."""

    def __init__(self, backbone: nn.Module, n_classes: int, embedding_dim: int, loss: str = "softmax",
                 lr: float = 2e-3, weight_decay: float = 5e-4, epochs: int = 8,
                 head_kwargs: dict | None = None, margin_warmup: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.head = HEADS[loss](embedding_dim, n_classes, **(head_kwargs or {}))

    def training_step(self, batch, batch_idx):
        if hasattr(self.head, "margin_scale") and self.hparams.margin_warmup > 0:
            ramp = self.hparams.margin_warmup * self.trainer.estimated_stepping_batches
            self.head.margin_scale = min(1.0, self.global_step / ramp)
            self.log("train/margin_scale", self.head.margin_scale)
        pictures, labels = batch
        x = pictures.float().div(255)
        flip = torch.rand(x.shape[0], device=x.device) < 0.5  # the released code trains with flips
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        logits, extra = self.head(self.backbone((x - 0.5) / 0.5), labels)
        loss = F.cross_entropy(logits, labels) + extra
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=steps,
                                                    pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def quiet_lightning() -> None:
    """Lightning's start-up banner (GPU/TPU lines, tips) drowns the run's own output."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # On a machine with SLURM's client installed, every fit outside `srun` warns; our fits use
    # one device and never need Lightning's SLURM environment.
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    # lightning 2.6 on torch 2.14: a deprecation inside Lightning itself, nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def fit_resumable(module: LightningModule, loader: DataLoader, epochs: int, work_dir: Path,
                  trainer_kwargs: dict | None = None) -> None:
    """Fit with a checkpoint after every epoch in `work_dir`; a killed run resumes from it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {"accelerator": "auto", "devices": 1, "logger": False, "enable_model_summary": False}
    kwargs.update(trainer_kwargs or {})
    # save_top_k=1 without a monitor keeps the latest epoch; with save_top_k=0 Lightning only
    # writes last.ckpt when training ends, which is too late to resume from.
    checkpoint = ModelCheckpoint(dirpath=work_dir, save_last=True, save_top_k=1, every_n_epochs=1,
                                 enable_version_counter=False)
    callbacks = [checkpoint]
    if kwargs.get("enable_progress_bar", True):
        # Lightning picks rich's bar where rich is installed, and rich draws nothing into a log
        # file (a SLURM job's output, `make reproduce > log`) until the fit ends; tqdm's does.
        callbacks.append(TQDMProgressBar())
    kwargs.update(max_epochs=epochs, default_root_dir=str(work_dir), callbacks=callbacks)
    quiet_lightning()
    last = work_dir / "last.ckpt"
    if last.exists():
        log.info("resuming training from %s", last)
    Trainer(**kwargs).fit(module, loader, ckpt_path=str(last) if last.exists() else None)


def public_population(n_identities: int, pictures_per_identity: int, image_size: int, seed: int,
                      progress: bool = True) -> TensorDataset:
    """The zoo's training set: rendered 'public' identities, disjoint from the evaluation ones."""
    data = synthetic_faces(n_identities, pictures_per_identity, image_size, seed, "public", progress)
    pictures, labels = [], []
    for label, pics in enumerate(data.identities.values()):
        pictures += [p.load() for p in pics]
        labels += [label] * len(pics)
    x = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
    return TensorDataset(x, torch.tensor(labels))


def train_backbone(backbone: nn.Module, embedding_dim: int, loss: str, train: dict, work_dir: Path,
                   trainer_kwargs: dict | None = None) -> nn.Module:
    """Train `backbone` in place on the public population; resumes from `work_dir/last.ckpt`."""
    seed_everything(train["seed"], workers=True)
    data = public_population(train["n_identities"], train["pictures_per_identity"],
                             train["image_size"], train["seed"])
    loader = DataLoader(data, batch_size=train["batch_size"], shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(train["seed"]))
    module = FaceClassifierModule(backbone, train["n_identities"], embedding_dim, loss,
                                  lr=train["lr"], weight_decay=train["weight_decay"],
                                  epochs=train["epochs"], head_kwargs=train.get("head"),
                                  margin_warmup=train.get("margin_warmup", 0.0))
    fit_resumable(module, loader, train["epochs"], work_dir, trainer_kwargs)
    return backbone.eval()
