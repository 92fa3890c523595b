"""Real photos in: face detection (MTCNN), each model's own crop, the crop store, and what
happens to a cloak between posting and scraping.

    from facecure.faces import face_crop
    crop, matrix = face_crop(pixels, "arcface112")     # or raises NoFace("no face found")

    from facecure.faces import Aligner, FaceDetector, crop_spec   # stored, for data sets
    aligner = Aligner(".cache/crops", FaceDetector())
    crop, matrix = aligner.crop(picture, crop_spec("arcface112"))
"""
from __future__ import annotations

from facecure.faces.align import CROPS, align, crop_matrix, crop_spec, warp
from facecure.faces.detect import Face, FaceDetector, NoFace, choose_face
from facecure.faces.scrape import Scrape, move_cloak
from facecure.faces.store import Aligner, align_dataset


def face_crop(pixels, crop: str | dict = "arcface112", detector: FaceDetector | None = None,
              **choice):
    """uint8 (H, W, 3) RGB photo -> (uint8 crop RGB, 2x3 matrix photo -> crop), or `NoFace`
    with the reason. `choice`: keep, min_face_size, max_outside (see `choose_face`)."""
    spec = crop_spec(crop) if isinstance(crop, str) else crop_spec(**crop)
    face, _ = choose_face((detector or FaceDetector()).detect(pixels), *pixels.shape[:2], **choice)
    return align(pixels, face, spec)


def build_aligner(root: str, detector: dict | None = None, keep: str = "largest",
                  min_face_size: float = 32, max_outside: float = 0.2,
                  device: str = "cpu") -> Aligner:
    """The `align` config group's factory."""
    return Aligner(root, FaceDetector(**(detector or {}), device=device), keep=keep,
                   min_face_size=min_face_size, max_outside=max_outside)


def crop_spec_of(extractor_cfg) -> dict:
    """The crop an extractor config declares (`crop: arcface112` or `crop: {kind: loose, ...}`);
    none where it declares nothing (models trained on the embedded crops)."""
    crop = extractor_cfg.get("crop") if extractor_cfg is not None else None
    if crop is None:
        return crop_spec("none")
    if isinstance(crop, str):
        return crop_spec(crop)
    return crop_spec(**dict(crop))


__all__ = ["CROPS", "Aligner", "Face", "FaceDetector", "NoFace", "Scrape", "align",
           "align_dataset", "build_aligner", "choose_face", "crop_matrix", "crop_spec",
           "crop_spec_of", "face_crop", "move_cloak", "warp"]
