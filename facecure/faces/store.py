"""Detections and crops stored by picture content, beside the embedding store.

    <root>/<detector fingerprint>/<picture key>.json          every face found, or the reason none
    <root>/<detector fingerprint>/<crop key>/<picture key>.png the crop, its matrix in a text chunk

A sweep detects each photo once, whatever the number of attacks, attackers, extractors and
defenses that reuse it; every file is written atomically, so concurrent jobs never clash and a
killed run keeps what it finished.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin
from tqdm.auto import tqdm

from facecure.data.dataset import Picture
from facecure.faces.align import align
from facecure.faces.detect import Face, FaceDetector, NoFace, choose_face
from facecure.utils.io import atomic_write_bytes, atomic_write_text, fingerprint

log = logging.getLogger(__name__)


class Aligner:
    """Photo in, the crop of a kind out (or `NoFace` with the reason), through the store.

    `keep`: which face of several (largest | central); `min_face_size`: the smallest usable face
    (box side, pixels); `max_outside`: the largest share of the box that may lie outside the photo.
    """

    def __init__(self, root: str | Path, detector: FaceDetector, keep: str = "largest",
                 min_face_size: float = 32, max_outside: float = 0.2):
        self.root, self.detector = Path(root), detector
        self.choice = {"keep": keep, "min_face_size": float(min_face_size),
                       "max_outside": float(max_outside)}
        self._faces: dict[str, dict] = {}

    @property
    def fingerprint(self) -> str:
        return f"{self.detector.fingerprint}-{fingerprint(self.choice, 8)}"

    def _detection_path(self, picture: Picture) -> Path:
        return self.root / self.detector.fingerprint / f"{picture.key}.json"

    def detection(self, picture: Picture, pixels: np.ndarray | None = None) -> dict:
        """{"shape": [h, w], "faces": [...]} for the photo, detecting only if not stored."""
        if picture.key in self._faces:
            return self._faces[picture.key]
        path = self._detection_path(picture)
        if path.exists():
            found = json.loads(path.read_text())
        else:
            pixels = picture.load() if pixels is None else pixels
            faces = self.detector.detect(pixels)
            found = {"shape": list(pixels.shape[:2]), "faces": [f.as_dict() for f in faces]}
            atomic_write_text(path, json.dumps(found))
        self._faces[picture.key] = found
        return found

    def face(self, picture: Picture, pixels: np.ndarray | None = None) -> tuple[Face, str | None]:
        """The face kept and a note (several faces), or `NoFace`."""
        found = self.detection(picture, pixels)
        faces = [Face.from_dict(f) for f in found["faces"]]
        return choose_face(faces, *found["shape"], near=picture.box, **self.choice)

    def crop_key(self, picture: Picture, spec: dict) -> str:
        """The crop's content key (never the photo's: a crop is another picture)."""
        return fingerprint([picture.key, self.fingerprint, spec], 20)

    def _crop_path(self, picture: Picture, spec: dict) -> Path:
        return (self.root / self.detector.fingerprint / f"{spec['kind']}-{fingerprint([self.choice, spec], 8)}"
                / f"{picture.key}.png")

    def crop(self, picture: Picture, spec: dict, pixels: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 crop RGB, 2x3 matrix photo -> crop); `NoFace` where the photo has none.
        Crop `none` is the photo as given (a surrogate trained on the embedded crops)."""
        if spec["kind"] == "none":
            return (picture.load() if pixels is None else pixels), np.eye(2, 3)
        path = self._crop_path(picture, spec)
        if path.exists():
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB")).copy(), np.array(json.loads(img.text["matrix"]))
        pixels = picture.load() if pixels is None else pixels
        face, _ = self.face(picture, pixels)
        crop, matrix = align(pixels, face, spec)
        info = PngImagePlugin.PngInfo()
        info.add_text("matrix", json.dumps(matrix.tolist()))
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="PNG", pnginfo=info)
        atomic_write_bytes(path, buf.getvalue())
        return crop, matrix

    def crop_picture(self, picture: Picture, spec: dict, pixels: np.ndarray | None = None) -> Picture:
        """The crop as a Picture of its own (content key, lazily read from the store), which
        remembers its photo so a cloak can be moved to another crop or pasted back."""
        if spec["kind"] == "none":
            return Picture(picture.identity, picture.name, picture.key, _loader=picture.load,
                           origin=picture, crop="none", crop_spec=spec)
        self.crop(picture, spec, pixels)  # detect and store now; raises NoFace
        return Picture(picture.identity, picture.name, self.crop_key(picture, spec),
                       _loader=lambda: self.crop(picture, spec)[0], origin=picture,
                       crop=spec["kind"], crop_spec=spec)


def align_dataset(dataset, spec: dict, aligner: Aligner, progress: bool = True):
    """Each photo replaced by its crop of `spec`; photos without a usable face are skipped and
    named, identities left under `min_pictures` dropped and named. Already-aligned data sets
    (the embedded one) and `crop=none` come back unchanged."""
    from facecure.data.dataset import FaceDataset

    if dataset.aligned or spec["kind"] == "none":
        return dataset
    identities, skipped, notes = {}, list(dataset.skipped), list(dataset.notes)
    photos = [p for pics in dataset.identities.values() for p in pics]
    calls = aligner.detector.calls
    bar = tqdm(total=len(photos), desc=f"detect and align ({spec['kind']})", unit="pic",
               disable=not progress, leave=False)
    for identity, pictures in dataset.identities.items():
        crops = []
        for p in pictures:
            where = p.source or f"{identity}/{p.name}"
            try:
                crops.append(aligner.crop_picture(p, spec))
                _, note = aligner.face(p)
                if note:
                    notes.append({"path": where, "note": note})
            except NoFace as err:
                skipped.append({"path": where, "reason": str(err)})
            bar.update()
        if len(crops) < dataset.min_pictures:
            skipped.append({"identity": identity, "reason": f"{len(crops)} picture(s) with a usable "
                            f"face, fewer than data.min_pictures={dataset.min_pictures}"})
            continue
        identities[identity] = crops
    bar.close()
    for item in skipped[len(dataset.skipped):]:
        log.warning("skipped %s: %s", item.get("path") or f"identity {item['identity']}", item["reason"])
    log.info("aligned %d photos for crop %s (%d detector passes, the rest from the crop store)",
             len(photos), spec["kind"], aligner.detector.calls - calls)
    if not identities:
        raise ValueError(f"{dataset.name}: no identity has {dataset.min_pictures} pictures with a "
                         "usable face")
    return FaceDataset(dataset.name, identities, dataset.synthetic, skipped, aligned=True,
                       min_pictures=dataset.min_pictures, notes=notes)
