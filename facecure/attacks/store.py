"""Perturbed pictures, stored as lossless PNG keyed by (attack fingerprint, original picture).

`perturb_pictures` attacks only what is not stored yet, batch by batch, writing each batch
before starting the next: a killed run loses at most one batch, and a rerun attacks nothing.
Each PNG has a JSON twin with the budget the perturbation actually used.

Real photos (a picture with an `origin`): the attack perturbs its surrogates' crop of the photo
(`attack.crop_spec`), at the attack's size, and the store keeps the cloak at the crop's own size
(the tool's cloak resized back, as Fawkes does). The trainer then gets that cloak on its own
crop: moved by the known landmarks (the paper's protocol), or pasted into the photo, scraped
(`facecure.faces.scrape`) and detected again. A twin whose face the trainer cannot find again
is lost to it: left out, and listed in `lost`.
"""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from facecure.attacks.base import Attack, NoAttack, ProvidedAttack
from facecure.attacks.budget import measure
from facecure.data.dataset import Picture
from facecure.extractors.base import resize, to_tensor
from facecure.faces.detect import NoFace
from facecure.faces.scrape import cloak_delta, move_cloak
from facecure.utils.io import atomic_write_bytes, atomic_write_text


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _whole_users(pictures: list[Picture], batch_size: int) -> list[list[Picture]]:
    """Batches of up to `batch_size` pictures that never split a user: targeted attacks
    (Fawkes v0.3) use the mean over all of a user's pictures."""
    users: dict[str, list[Picture]] = {}
    for p in pictures:
        users.setdefault(p.identity, []).append(p)
    batches, current = [], []
    for user in users.values():
        if current and len(current) + len(user) > batch_size:
            batches.append(current)
            current = []
        current = current + user
    return batches + ([current] if current else [])


class PerturbedStore:
    def __init__(self, root: str | Path, batch_size: int = 64, device: str = "cpu", lpips=None,
                 aligner=None, scrape=None):
        self.root, self.batch_size, self.device = Path(root), batch_size, device
        self.lpips = lpips  # (x, y) -> (B,) LPIPS, or None where AlexNet's weights are absent
        self.aligner, self.scrape = aligner, scrape  # real photos: crops, and the scrape model
        self._lost: dict[tuple[str, str], dict] = {}

    @property
    def lost(self) -> list[dict]:
        """Twins the trainer could not use (no face found again after the scrape)."""
        return list(self._lost.values())

    def _paths(self, attack: Attack, picture: Picture) -> tuple[Path, Path]:
        folder = self.root / attack.fingerprint
        return folder / f"{picture.key}.png", folder / f"{picture.key}.json"

    def _source(self, attack: Attack, picture: Picture) -> Picture:
        """What the attack perturbs: its surrogates' crop of the photo, else the picture."""
        spec = getattr(attack, "crop_spec", None)
        if picture.origin is None or spec is None or spec == picture.crop_spec:
            return picture
        return self.aligner.crop_picture(picture.origin, spec)

    def _attack_input(self, attack: Attack, picture: Picture) -> torch.Tensor:
        x = to_tensor(picture.load())
        if attack.image_size and x.shape[-2:] != (attack.image_size,) * 2:
            x = resize(x, attack.image_size)
            # Back on the 8-bit grid: the resized picture is what the user would have posted,
            # and rounding the cloak to 8 bits then keeps it within its L-inf budget.
            x = to_tensor(_to_uint8(x))
        return x

    def perturb_pictures(self, attack: Attack, pictures: Sequence[Picture],
                         progress: bool = True) -> tuple[list[Picture], list[dict]]:
        """Perturbed twins of `pictures` (same identity and name) and their budgets."""
        if isinstance(attack, NoAttack):
            return list(pictures), [{"dssim": 0.0, "linf": 0.0, "psnr": float("inf")}] * len(pictures)
        unique = {p.key: self._source(attack, p) for p in pictures}.values()
        todo = [p for p in unique if not self._paths(attack, p)[1].exists()]
        bar = tqdm(total=len(todo), desc=f"attack {attack.name}", unit="pic",
                   disable=not progress or not todo, leave=False)
        # Same-size pictures batch together (a folder data set mixes sizes when image_size=None).
        by_size: dict[tuple, list[Picture]] = {}
        if isinstance(attack, ProvidedAttack):
            for batch in _whole_users(todo, self.batch_size):
                if batch and batch[0].origin is not None:  # the tool works on whole photos
                    self._provided_photos(attack, batch)
                    bar.update(len(batch))
                    continue
                for p, adv in zip(batch, attack.provide(batch)):
                    x = self._attack_input(attack, p)
                    if x.shape[-2:] != adv.shape[:2]:  # the tool resized: compare at its size
                        x = to_tensor(_to_uint8(resize(x, adv.shape[:2])))
                    self._save(attack, p, adv, measure(x[None], to_tensor(adv)[None], self.lpips)[0])
                bar.update(len(batch))
        else:
            for p in todo:
                by_size.setdefault(tuple(self._attack_input(attack, p).shape), []).append(p)
        for group in by_size.values():
            for batch in _whole_users(group, self.batch_size):
                x = torch.stack([self._attack_input(attack, p) for p in batch]).to(self.device)
                x_adv = attack.perturb(x, [p.identity for p in batch]).detach()
                if batch[0].origin is not None:  # the cloak back at each crop's own size
                    for p, clean, adv in self._at_crop_size(batch, x, x_adv):
                        self._save(attack, p, _to_uint8(adv[0]), measure(clean, adv, self.lpips)[0])
                    bar.update(len(batch))
                    continue
                stored = torch.stack([to_tensor(_to_uint8(a)) for a in x_adv]).to(self.device)
                for p, adv, budget in zip(batch, stored, measure(x, stored, self.lpips)):
                    self._save(attack, p, _to_uint8(adv), budget)
                bar.update(len(batch))
        bar.close()
        return self.load(attack, pictures)

    def _at_crop_size(self, batch: list[Picture], x: torch.Tensor, x_adv: torch.Tensor):
        """(picture, clean (1, 3, H, W), cloaked on the 8-bit grid) at each crop's own size: the
        tool's cloak resized onto the crop (crops of the whole photo differ in size)."""
        for p, before, after in zip(batch, x, x_adv):
            clean = to_tensor(p.load())[None].to(self.device)
            delta = resize((after - before)[None], tuple(clean.shape[-2:]))
            cloaked = to_tensor(_to_uint8((clean + delta).clamp(0, 1)[0]))[None].to(self.device)
            yield p, clean, cloaked

    def _provided_photos(self, attack, batch: list[Picture]) -> None:
        """A tool that cloaks whole photos (fawkes_cli, from_dir): each output photo is aligned
        like its original, and the budget is measured on that crop."""
        outputs = attack.provide([p.origin for p in batch])
        for p, adv in zip(batch, outputs):
            photo = Picture.from_pixels(p.identity, p.name, adv)
            try:
                twin = self.aligner.crop(photo, p.crop_spec, adv)[0]
            except NoFace as err:
                atomic_write_text(self._paths(attack, p)[1], json.dumps(
                    {"identity": p.identity, "name": p.name, "attack": attack.fingerprint,
                     "lost": f"the tool's output: {err}"}))
                continue
            x = to_tensor(p.load())[None]
            if x.shape[-2:] != twin.shape[:2]:
                x = resize(x, twin.shape[:2])
            self._save(attack, p, twin, measure(x, to_tensor(twin)[None], self.lpips)[0])

    def _view(self, attack: Attack, picture: Picture, source: Picture, pixels: np.ndarray):
        """The twin as the trainer gets it, on `picture`'s own crop (None: lost, with why)."""
        if picture.origin is None:
            return Picture.from_pixels(picture.identity, picture.name, pixels), None
        spec = picture.crop_spec
        if self.scrape is not None:
            _, matrix = self.aligner.crop(picture.origin, source.crop_spec)
            photo = self.scrape(picture.origin.load(), cloak_delta(pixels, source.load()), matrix)
            posted = Picture.from_pixels(picture.identity, picture.name, photo)
            try:
                return self.aligner.crop_picture(posted, spec, photo), None
            except NoFace as err:
                return None, f"after the scrape: {err}"
        if source is not picture:
            _, from_m = self.aligner.crop(picture.origin, source.crop_spec)
            _, to_m = self.aligner.crop(picture.origin, spec)
            pixels = move_cloak(cloak_delta(pixels, source.load()), from_m, to_m, picture.load())
        twin = Picture.from_pixels(picture.identity, picture.name, pixels)
        twin.origin, twin.crop, twin.crop_spec = picture.origin, picture.crop, spec
        return twin, None

    def _save(self, attack: Attack, picture: Picture, pixels: np.ndarray, budget: dict) -> None:
        """PNG first, then its JSON twin: a picture counts as stored once its JSON exists."""
        png, meta = self._paths(attack, picture)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        atomic_write_bytes(png, buf.getvalue())
        atomic_write_text(meta, json.dumps({"identity": picture.identity, "name": picture.name,
                                            "attack": attack.fingerprint, **budget}))

    def load(self, attack: Attack, pictures: Sequence[Picture]) -> tuple[list[Picture], list[dict]]:
        """The twins of `pictures` and their budgets, less the ones lost (see `lost`)."""
        out, budgets = [], []
        for p in pictures:
            source = self._source(attack, p)
            png, meta = self._paths(attack, source)
            budget = json.loads(meta.read_text())
            twin, why = None, budget.get("lost")
            if why is None:
                with Image.open(png) as img:
                    pixels = np.asarray(img.convert("RGB")).copy()
                twin, why = self._view(attack, p, source, pixels)
            if twin is None:
                self._lost[(attack.fingerprint, p.key)] = {
                    "identity": p.identity, "name": p.name, "attack": attack.name, "reason": why}
                continue
            out.append(twin)
            budgets.append(budget)
        return out, budgets
