"""Decoding pictures of any common format into uint8 RGB, or a clear reason why not.

Face pictures scraped from the web come as CMYK JPEGs, 16-bit PNGs, palette GIFs, pictures with
an alpha channel or in grayscale. Each is converted to 8-bit RGB; transparency is composited on
white (what a browser shows). A file that cannot be decoded raises `UnreadablePicture`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class UnreadablePicture(ValueError):
    """A file that is not a picture FaceCure can decode."""


def to_rgb(img: Image.Image) -> np.ndarray:
    """PIL image of any mode -> uint8 (H, W, 3) RGB array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1e-12)
        img = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, L, 1
    return np.asarray(img, dtype=np.uint8).copy()


def load_picture(path: str | Path) -> np.ndarray:
    """Decode `path` into a uint8 (H, W, 3) RGB array, honouring EXIF orientation."""
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            arr = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadablePicture(f"{path}: cannot decode ({type(err).__name__}: {err})") from err
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise UnreadablePicture(f"{path}: too small ({arr.shape[1]}x{arr.shape[0]} pixels)")
    return arr
