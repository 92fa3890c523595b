"""`zoo_clip`: a small CLIP built from open_clip's own model classes, tokenizer and ClipLoss.

It is trained contrastively on picture/caption pairs "A photograph of user #X." over its own
synthetic public population, as the paper fine-tunes CLIP on faces (App. B.3). Each batch holds
one picture of each of `batch_size` distinct users, so no caption appears twice in a batch
(a repeated caption would be a false negative for the contrastive loss). The extractor is the
image tower; the whole model is cached so later defenses can use the text tower too.
"""
from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
from lightning.pytorch import LightningModule, seed_everything
from open_clip.loss import ClipLoss
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from torch.utils.data import DataLoader, Sampler

from facecure.data.synthetic import RENDERER_VERSION
from facecure.extractors.base import Extractor
from facecure.extractors.training import fit_resumable, public_population
from facecure.utils.cached_fit import cached_fit

log = logging.getLogger(__name__)
PROMPT = "A photograph of user #{}."


def build_clip(embed_dim: int, vision_cfg: dict, text_cfg: dict) -> open_clip.CLIP:
    return open_clip.CLIP(embed_dim, CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**text_cfg))


class DistinctUsersSampler(Sampler):
    """Batches of `batch_size` picture indices, each from a different user.

    The order depends on (seed, epoch) only; Lightning sets the epoch through `.sampler`
    (it calls `batch_sampler.sampler.set_epoch`), so a resumed run replays the right epoch.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int):
        self.by_user = [torch.nonzero(labels == u).flatten() for u in labels.unique()]
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.n_batches = len(labels) // batch_size
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        self.epoch += 1  # without Lightning, the next pass is the next epoch
        for _ in range(self.n_batches):
            users = torch.randperm(len(self.by_user), generator=gen)[:self.batch_size]
            yield [int(self.by_user[u][torch.randint(len(self.by_user[u]), (1,), generator=gen)])
                   for u in users]


class ClipModule(LightningModule):
    def __init__(self, model: open_clip.CLIP, context_length: int, lr: float, weight_decay: float):
        super().__init__()
        self.model, self.loss = model, ClipLoss()
        self.tokenizer = SimpleTokenizer(context_length=context_length)
        self.lr, self.weight_decay = lr, weight_decay

    def training_step(self, batch, batch_idx):
        pictures, labels = batch
        x = (pictures.float().div(255) - 0.5) / 0.5
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        text = self.tokenizer([PROMPT.format(int(u)) for u in labels]).to(x.device)
        image_features = self.model.encode_image(x, normalize=True)
        text_features = self.model.encode_text(text, normalize=True)
        loss = self.loss(image_features, text_features, self.model.logit_scale.exp())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_clip(model, train: dict, context_length: int, work_dir: Path, trainer_kwargs: dict | None):
    seed_everything(train["seed"], workers=True)
    data = public_population(train["n_identities"], train["pictures_per_identity"],
                             train["image_size"], train["seed"])
    sampler = DistinctUsersSampler(data.tensors[1], train["batch_size"], train["seed"])
    loader = DataLoader(data, batch_sampler=sampler)
    module = ClipModule(model, context_length, train["lr"], train["weight_decay"])
    fit_resumable(module, loader, train["epochs"], work_dir, trainer_kwargs)
    return model.eval()


def zoo_clip_member(name: str, embed_dim: int, vision_cfg: dict, text_cfg: dict, input_size: int,
                    train: dict, cache_dir: str, trainer: dict | None = None,
                    device: str = "cpu") -> Extractor:
    """The zoo's CLIP: image tower as the extractor (RGB in [-1, 1], L2-normalised output)."""
    recipe = {"embed_dim": embed_dim, "vision_cfg": dict(vision_cfg), "text_cfg": dict(text_cfg),
              "train": dict(train), "prompt": PROMPT, "renderer": RENDERER_VERSION}
    seed_everything(train["seed"], workers=True, verbose=False)  # the initial weights too
    model = build_clip(embed_dim, vision_cfg, text_cfg)
    fitted = cached_fit(
        cache_dir, name, recipe,
        lambda work: train_clip(model, dict(train), text_cfg["context_length"], work, trainer),
        model.state_dict, trainer, f"zoo member {name}")
    model.load_state_dict(fitted.state)
    model.eval()
    fp = fitted.fingerprint
    extractor = Extractor(name, model.visual, embed_dim, input_size, fingerprint=f"{name}-{fp}")
    extractor.clip_model = model  # the text tower, for CLIP fine-tuning defenses
    return extractor.to(device)


__all__ = ["PROMPT", "build_clip", "zoo_clip_member"]
