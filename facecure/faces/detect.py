"""Finding the face in a photo: MTCNN (facenet-pytorch, weights inside its wheel) for boxes and
five landmarks, then one face chosen (the largest by default) or a reason why none is usable.

Landmarks are (5, 2) image pixels (x, y) in MTCNN's order: left eye, right eye, nose tip, left
and right mouth corner (left as seen in the picture).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from facecure.utils.io import fingerprint

KEEP = ("largest", "central")


class NoFace(ValueError):
    """A photo with no usable face; the message is the reason recorded for it."""


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    landmarks: tuple[tuple[float, float], ...]  # 5 x (x, y)
    score: float

    @property
    def size(self) -> float:
        """The box's shorter side in pixels: what `min_face_size` compares."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Face:
        return cls(tuple(d["box"]), tuple(tuple(p) for p in d["landmarks"]), float(d["score"]))


def outside_share(box, height: int, width: int) -> float:
    """Share of the box's area that lies outside the picture (a face cut by the border)."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
    inside = max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0))
    return 1.0 - inside / area


def choose_face(faces: list[Face], height: int, width: int, keep: str = "largest",
                min_face_size: float = 32, max_outside: float = 0.2,
                near: tuple[float, float, float, float] | None = None) -> tuple[Face, str | None]:
    """The face to keep and a note (several faces), or `NoFace` with the reason.

    `near`: a listed box (FaceScrub's) picks the face that overlaps it most instead.
    """
    if not faces:
        raise NoFace("no face found")
    if near is not None:
        chosen = max(faces, key=lambda f: _iou(f.box, near))
        if _iou(chosen.box, near) < 0.3:
            raise NoFace(f"no detected face overlaps the listed box {list(np.round(near, 1))}")
    elif keep == "largest":
        chosen = max(faces, key=lambda f: f.size)
    elif keep == "central":
        centre = np.array([width / 2, height / 2])
        chosen = min(faces, key=lambda f: np.linalg.norm(
            np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2]) - centre))
    else:
        raise ValueError(f"align.keep={keep!r}: expected one of {', '.join(KEEP)}")
    if chosen.size < min_face_size:
        raise NoFace(f"face of {chosen.size:.0f} px, below align.min_face_size={min_face_size:g}")
    cut = outside_share(chosen.box, height, width)
    if cut > max_outside:
        raise NoFace(f"face cut by the picture border ({cut:.0%} of its box outside, "
                     f"align.max_outside={max_outside:g})")
    note = None
    if len(faces) > 1:
        how = "the one on the listed box" if near is not None else f"the {keep}"
        note = f"{len(faces)} faces: kept {how} ({chosen.size:.0f} px)"
    return chosen, note


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceDetector:
    """MTCNN with its published settings; `detect(pixels)` -> every face, best score first.

    `min_face_size` is what MTCNN searches for (its image pyramid); the smaller
    `choose_face(min_face_size=...)` of the aligner decides what is usable.
    """

    def __init__(self, min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709,
                 device: str = "cpu"):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:  # installed --no-deps by `make install`
            raise ImportError("face detection needs facenet-pytorch 2.6.0: "
                              "pip install --no-deps facenet-pytorch==2.6.0 (make install does)") from err
        self.settings = {"detector": "mtcnn", "min_face_size": int(min_face_size),
                         "thresholds": [float(t) for t in thresholds], "factor": float(factor)}
        self._mtcnn = MTCNN(min_face_size=min_face_size, thresholds=list(thresholds),
                            factor=factor, keep_all=True, post_process=False, device=device)
        self.calls = 0  # detector passes made (a rerun that reuses the crop store makes none)

    @property
    def fingerprint(self) -> str:
        return f"mtcnn-{fingerprint(self.settings, 12)}"

    @torch.no_grad()
    def detect(self, pixels: np.ndarray) -> list[Face]:
        """uint8 (H, W, 3) RGB -> faces, highest score first."""
        self.calls += 1
        boxes, scores, points = self._mtcnn.detect(pixels, landmarks=True)
        if boxes is None:
            return []
        faces = [Face(tuple(map(float, b)), tuple(tuple(map(float, p)) for p in pts), float(s))
                 for b, s, pts in zip(boxes, scores, points)]
        return sorted(faces, key=lambda f: -f.score)
