"""Between posting and scraping: what happens to a cloak made on a face crop.

A protection tool cloaks the aligned crop of its own model; the photo a user posts is the
original with that cloak put back (inverse warp, a soft mask at the crop's edge, as Fawkes
writes its output). A platform may recompress it (JPEG) and resize it; the model trainer then
detects and aligns the scraped photo for its own extractor. The paper's protocol has none of
this: the trainer sees the cloaked crop itself (`scrape=none`), moved onto its own crop by the
known landmarks where the two crops differ (`move_cloak`).
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from facecure.faces.align import warp
from facecure.utils.io import fingerprint


def cloak_delta(cloaked: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) in [-1, 1]: what the tool added to the crop."""
    return (cloaked.astype(np.float32) - clean.astype(np.float32)) / 255


def _with_delta(pixels: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return np.clip(pixels.astype(np.float32) + delta * 255, 0, 255).round().astype(np.uint8)


def move_cloak(delta: np.ndarray, from_matrix: np.ndarray, to_matrix: np.ndarray,
               to_clean: np.ndarray) -> np.ndarray:
    """The cloak made on crop A (photo -> A: `from_matrix`) added to crop B (`to_matrix`, its clean
    pixels `to_clean`): B's pixels outside crop A get no cloak."""
    a = np.vstack([from_matrix, [0, 0, 1]])
    b = np.vstack([to_matrix, [0, 0, 1]])
    a_to_b = (b @ np.linalg.inv(a))[:2]
    h, w = to_clean.shape[:2]
    return _with_delta(to_clean, warp(delta, a_to_b, (w, h)))


class Scrape:
    """The photo a trainer scrapes, made from a cloaked crop.

    `feather`: width in crop pixels of the soft mask's edge; `jpeg_quality`: recompression
    (None: none); `resize`: scale factor of the whole photo (None: none).
    """

    def __init__(self, feather: float = 4.0, jpeg_quality: int | None = None,
                 resize: float | None = None):
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"scrape.jpeg_quality={jpeg_quality}: expected 1..100 or null")
        if resize is not None and not 0 < float(resize) <= 4:
            raise ValueError(f"scrape.resize={resize}: expected a scale factor in (0, 4] or null")
        self.feather = float(feather)
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        self.resize = None if resize is None else float(resize)

    def params(self) -> dict:
        return {"feather": self.feather, "jpeg_quality": self.jpeg_quality, "resize": self.resize}

    @property
    def fingerprint(self) -> str:
        return f"scrape-{fingerprint(self.params(), 10)}"

    def paste(self, photo: np.ndarray, delta: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The photo with the crop's cloak put back (inverse warp, soft-edged mask)."""
        h, w = delta.shape[:2]
        mask = np.ones((h, w), np.float32)
        if self.feather > 0:
            ramp = np.minimum.outer(np.minimum(np.arange(h), np.arange(h)[::-1]),
                                    np.minimum(np.arange(w), np.arange(w)[::-1])).astype(np.float32)
            mask = np.clip((ramp + 0.5) / self.feather, 0, 1)
        inverse = cv2.invertAffineTransform(matrix)
        size = (photo.shape[1], photo.shape[0])
        back = warp(delta * mask[..., None], inverse, size)
        return _with_delta(photo, back)

    def __call__(self, photo: np.ndarray, delta: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB photo, float cloak of its crop, the crop's matrix -> scraped photo."""
        return self.transform(self.paste(photo, delta, matrix))

    def transform(self, out: np.ndarray) -> np.ndarray:
        """What the platform does to a posted photo: the resize, then the recompression."""
        if self.resize is not None and self.resize != 1:
            size = (max(8, round(out.shape[1] * self.resize)), max(8, round(out.shape[0] * self.resize)))
            out = np.asarray(Image.fromarray(out).resize(size, Image.Resampling.LANCZOS))
        if self.jpeg_quality is not None:
            buf = io.BytesIO()
            Image.fromarray(out).save(buf, format="JPEG", quality=self.jpeg_quality)
            with Image.open(buf) as img:
                out = np.asarray(img.convert("RGB")).copy()
        return out
