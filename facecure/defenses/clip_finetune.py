"""`defense=clip_finetune` (paper App. B.3): fine-tune CLIP on faces, then WiSE-FT.

The model trainer fine-tunes the run's CLIP extractor with CLIP's own contrastive image-text
loss (open_clip's `ClipLoss` and tokenizer, through the zoo's `ClipModule`), captioning each of
the public users' clean pictures "A photograph of user #X.", X the user's number. The fine-tuned
weights are interpolated with the zero-shot ones (facecure.defenses.wiseft) for each configured
α, and each interpolated model is scored as the trainer's extractor on the evaluation users.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from lightning.pytorch import seed_everything
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facecure.data.dataset import Picture
from facecure.defenses.base import Defense
from facecure.defenses.context import Defended, DefenseContext
from facecure.defenses.wiseft import wiseft_extractor
from facecure.extractors.base import Extractor, resize, to_tensor
from facecure.extractors.training import fit_resumable
from facecure.extractors.zoo_clip import PROMPT, ClipModule, DistinctUsersSampler
from facecure.utils.cached_fit import cached_fit
from facecure.utils.io import fingerprint

log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the fine-tuning code changes what a recipe produces


def clip_model_of(extractor: Extractor) -> open_clip.CLIP:
    """The whole CLIP model (image and text towers) behind a CLIP extractor: the zoo's
    `zoo_clip` keeps it as `clip_model` (its backbone is `model.visual`), the `clip` adapter
    as its backbone."""
    model = getattr(extractor, "clip_model", None)
    if model is None:
        model = getattr(extractor, "backbone", None)
    if not isinstance(model, open_clip.CLIP):
        raise TypeError(
            f"defense=clip_finetune fine-tunes a CLIP model with its text tower, but extractor "
            f"{extractor.name!r} has a {type(model).__name__}; use extractor=zoo_clip or "
            "extractor=clip (an open_clip CLIP checkpoint)")
    return model


class ExtractorPreprocessed(nn.Module):
    """The CLIP model behind the base extractor's own preprocessing.

    `ClipModule` hands `encode_image` pictures in [-1, 1] (the zoo's input convention); they are
    mapped back to [0, 1] and preprocessed as the extractor embeds (size, channel order, mean and
    std), so that e.g. a ViT-B/32 with OpenAI's normalisation trains on what it will embed.
    """

    def __init__(self, clip: open_clip.CLIP, base: Extractor):
        super().__init__()
        self.clip = clip
        self.preprocessing = Extractor(
            f"{base.name}-preprocessing", nn.Identity(), base.embedding_dim, base.input_size, "",
            mean=tuple(base.mean.flatten().tolist()), std=tuple(base.std.flatten().tolist()),
            channels=base.channels, value_range=base.value_range).train()  # Lightning warns
        # about modules left in eval mode; this one has no layers that train differently

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.clip.encode_image(self.preprocessing.preprocess(x * 0.5 + 0.5), normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.clip.encode_text(text, normalize)


class CaptionedPictures(Dataset):
    """(float (3, S, S) picture in [0, 255], user number): resized as `Extractor.embed` resizes,
    and left unrounded, so training sees the pixels the extractor will embed."""

    def __init__(self, pictures: Sequence[Picture], users: Sequence[int], size: int):
        self.pictures, self.users, self.size = list(pictures), list(users), size

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, i: int):
        return resize(to_tensor(self.pictures[i].load()), self.size) * 255, self.users[i]


def finetune_clip(base: Extractor, pictures: Sequence[Picture], users: Sequence[int],
                  settings: dict, cache_dir: Path, seed: int,
                  trainer_kwargs: dict | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """CLIP of `base` fine-tuned on `pictures` captioned with their user numbers `users`.

    settings: epochs, lr, batch_size (distinct users per batch), weight_decay. Returns the
    fine-tuned state dict (CPU) and its fingerprint; trained once, cached at
    `cache_dir/clip_finetune-<fingerprint>.pt`, and a killed training resumes from its last epoch.
    """
    zero_shot = clip_model_of(base)
    n_users = len(set(users))
    if n_users < 2:
        raise ValueError(f"contrastive fine-tuning needs at least 2 public users, got {n_users}: "
                         "raise data.n_identities or defense.public_fraction")
    batch_size = min(int(settings["batch_size"]), n_users)  # a batch holds distinct users
    recipe = {"version": CACHE_VERSION, "base": base.fingerprint, "prompt": PROMPT, "seed": seed,
              "pictures": fingerprint(sorted(zip((p.key for p in pictures), users))),
              "batch_size": batch_size,
              **{k: settings[k] for k in ("epochs", "lr", "weight_decay")}}
    trained = {}

    def fit(work: Path) -> None:
        log.info("fine-tuning %s on %d pictures of %d public users", base.name, len(pictures),
                 n_users)
        seed_everything(seed, workers=True, verbose=False)
        # Every weight trainable: attacks freeze their surrogates, and the run's CLIP may be one.
        model = trained["model"] = copy.deepcopy(zero_shot).cpu().train().requires_grad_(True)
        sampler = DistinctUsersSampler(torch.tensor(list(users)), batch_size, seed)
        loader = DataLoader(CaptionedPictures(pictures, users, base.input_size),
                            batch_sampler=sampler)
        module = ClipModule(ExtractorPreprocessed(model, base), model.context_length,
                            settings["lr"], settings["weight_decay"])
        fit_resumable(module, loader, settings["epochs"], work, trainer_kwargs)

    fitted = cached_fit(cache_dir, "clip_finetune", recipe, fit,
                        lambda: {k: v.detach().cpu()
                                 for k, v in trained["model"].state_dict().items()},
                        trainer_kwargs, f"the CLIP fine-tune of {base.name}")
    return fitted.state, fitted.fingerprint


class ClipFineTune(Defense):
    """`defense=clip_finetune`: one Defended per WiSE-FT α: α = 0 is zero-shot CLIP, α = 1 the
    fine-tuned model (settings: conf/defense/clip_finetune.yaml)."""

    name = "clip_finetune"

    def __init__(self, *, public_fraction: float, epochs: int, lr: float, batch_size: int,
                 weight_decay: float, alphas: list[float]):
        self.public_fraction, self.alphas = public_fraction, list(alphas)
        self.settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                         "weight_decay": weight_decay}

    def run(self, ctx: DefenseContext) -> list[Defended]:
        base = ctx.extractor
        clip_model_of(base)  # a clear error before any training
        number = {u: i for i, u in enumerate(sorted(ctx.public.identities))}
        pictures = ctx.public_pictures()
        tuned, tuned_fp = finetune_clip(base, pictures, [number[p.identity] for p in pictures],
                                        self.settings, ctx.cache_dir, ctx.seed,
                                        ctx.trainer_kwargs)
        out = []
        for alpha in self.alphas:
            extractor = wiseft_extractor(base, tuned, alpha, tuned_fp, clip_model_of)
            out.append(Defended(ctx.protection(extractor), "clip_finetune", extractor.name,
                                extractor.fingerprint, {"alpha": float(alpha)}))
            del extractor  # one interpolated copy in memory at a time (ViT-B/32: 600 MB each)
        return out
