"""The crop each face model was trained on, from a detected face.

Every crop is an affine warp of the photo: `crop_matrix` gives the 2x3 matrix M (photo pixels ->
crop pixels) and the crop's size, `warp` applies it. Keeping M lets a cloak made on one crop be
put back into the photo (`facecure.faces.scrape`) or moved onto another model's crop.

- `arcface112`: the five landmarks onto the ArcFace template, 112x112 (insightface's norm_crop);
- `dlib150`: dlib's own chip, `get_face_chip(size=150, padding=0.25)`, from dlib's 5-point shape
  predictor (face_recognition_models) run on the detected box;
- `loose`: the box widened by `margin` pixels each side, clipped to the photo, resized to
  `size` x `size` (HSE FaceRes: +10 px, 224);
- `none`: the picture as given (already crops: the embedded data and the zoo).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from facecure.faces.detect import Face

CROPS = ("arcface112", "dlib150", "loose", "none")


def crop_spec(kind: str, size: int | None = None, margin: float | None = None) -> dict:
    """A crop kind with its settings filled in: what keys the crop store."""
    if kind == "arcface112":
        return {"kind": kind, "size": 112}
    if kind == "dlib150":
        return {"kind": kind, "size": 150, "padding": 0.25}
    if kind == "loose":
        return {"kind": kind, "size": int(size or 224), "margin": float(10 if margin is None else margin)}
    if kind == "none":
        return {"kind": kind}
    raise ValueError(f"crop={kind!r}: expected one of {', '.join(CROPS)}")


def crop_matrix(pixels: np.ndarray, face: Face, spec: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """(2x3 float64 M mapping photo (x, y) to crop (x, y), (crop width, crop height))."""
    kind = spec["kind"]
    if kind == "arcface112":
        from insightface.utils.face_align import estimate_norm
        return estimate_norm(np.asarray(face.landmarks, np.float64), 112), (112, 112)
    if kind == "dlib150":
        return _dlib_chip_matrix(pixels, face, spec["size"], spec["padding"])
    if kind == "loose":
        h, w = pixels.shape[:2]
        x1, y1, x2, y2 = face.box
        m = spec["margin"]
        x1, y1 = max(x1 - m, 0.0), max(y1 - m, 0.0)
        x2, y2 = min(x2 + m, float(w)), min(y2 + m, float(h))
        s = spec["size"]
        sx, sy = s / (x2 - x1), s / (y2 - y1)
        # cv2 samples pixel centres: crop pixel c covers photo x1 + (c + 0.5) / sx - 0.5.
        return (np.array([[sx, 0, -x1 * sx + 0.5 * sx - 0.5], [0, sy, -y1 * sy + 0.5 * sy - 0.5]]),
                (s, s))
    raise ValueError(f"crop {kind!r} has no matrix")


def warp(pixels: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The crop: bilinear, zero outside the photo (as insightface's norm_crop and dlib's chips).
    Float input stays float (cloak deltas), uint8 stays uint8."""
    # Downscaling a large face by more than 2x aliases with plain bilinear sampling: area-average
    # first (what dlib's chip extraction does with its pyramid).
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        factor = int(np.floor(1 / scale))
        small = cv2.resize(pixels, (max(1, pixels.shape[1] // factor), max(1, pixels.shape[0] // factor)),
                           interpolation=cv2.INTER_AREA)
        fx, fy = pixels.shape[1] / small.shape[1], pixels.shape[0] / small.shape[0]
        to_small = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
        matrix = (np.vstack([matrix, [0, 0, 1]]) @ to_small)[:2]
        pixels = small
    return cv2.warpAffine(pixels, matrix, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align(pixels: np.ndarray, face: Face, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) RGB photo -> (uint8 crop RGB, its 2x3 matrix)."""
    matrix, size = crop_matrix(pixels, face, spec)
    if spec["kind"] == "dlib150":  # dlib's own sampling, pixel for pixel
        return _dlib_chip(pixels, face, spec), matrix
    return warp(pixels, matrix, size), matrix


# --- dlib's chip -------------------------------------------------------------------------------

@functools.cache
def _dlib_predictor():
    try:
        import dlib
    except ImportError as err:
        raise ImportError("crop=dlib150 needs dlib: pip install dlib-bin==20.0.1.post1 "
                          "(make install does)") from err
    # face_recognition_models imports pkg_resources (gone from current setuptools): find its
    # files without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise FileNotFoundError("crop=dlib150 needs dlib's 5-point shape predictor "
                                "(shape_predictor_5_face_landmarks.dat) from the PyPI package "
                                "face-recognition-models 0.3.0 (make install installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_5_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall face-recognition-models==0.3.0")
    return dlib, dlib.shape_predictor(str(path))


def _dlib_shape(pixels: np.ndarray, face: Face):
    dlib, predictor = _dlib_predictor()
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    return dlib, predictor(np.ascontiguousarray(pixels), dlib.rectangle(x1, y1, x2, y2))


def _dlib_chip(pixels: np.ndarray, face: Face, spec: dict) -> np.ndarray:
    dlib, shape = _dlib_shape(pixels, face)
    return np.asarray(dlib.get_face_chip(np.ascontiguousarray(pixels), shape, size=spec["size"],
                                         padding=spec["padding"]))


def _dlib_chip_matrix(pixels, face, size, padding):
    """dlib's get_mapping_to_chip: the chip rectangle's corners, rotated by its angle about its
    centre, go to the chip's corners."""
    dlib, shape = _dlib_shape(pixels, face)
    details = dlib.get_face_chip_details(shape, size=size, padding=padding)
    r, angle = details.rect, details.angle
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    c, s = np.cos(angle), np.sin(angle)

    def rotated(x, y):
        d = np.array([x, y]) - centre
        return centre + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])

    src = np.float32([rotated(r.right(), r.top()), rotated(r.left(), r.bottom()),
                      rotated(r.right(), r.bottom())])
    dst = np.float32([[details.cols - 1, 0], [0, details.rows - 1],
                      [details.cols - 1, details.rows - 1]])
    return cv2.getAffineTransform(src, dst).astype(np.float64), (details.cols, details.rows)
