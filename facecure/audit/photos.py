"""The audit's photos: a folder read (every file decoded, odd ones named), each photo's crop
for a model (through the crop store), and what a scraper's platform does to a photo first."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from facecure.data.dataset import Picture
from facecure.data.folder import read_pictures
from facecure.faces import Aligner, NoFace, Scrape
from facecure.utils.io import picture_key

log = logging.getLogger(__name__)

# What platforms do to a posted photo before a scraper gets it (and detects it again): common
# recompression qualities and a downscale. `None`: the photo as posted.
SCRAPES: dict[str, Scrape | None] = {
    "as posted": None,
    "jpeg85": Scrape(feather=0, jpeg_quality=85),
    "jpeg70": Scrape(feather=0, jpeg_quality=70),
    "half size": Scrape(feather=0, resize=0.5),
}


@dataclass
class Photos:
    """A folder's readable photos, and every file that is not one (with the reason)."""

    folder: Path
    pictures: list[Picture]
    skipped: list[dict] = field(default_factory=list)


def read_folder(folder: str | Path, who: str) -> Photos:
    """Every picture file directly in `folder` (any common format; CMYK, 16-bit, alpha and
    grayscale are converted), labelled `who`. An unreadable file is named, never fatal."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of photos")
    skipped: list[dict] = []
    pictures = read_pictures(root, who, skipped)
    if not pictures:
        raise ValueError(f"{root}: no readable photo (" + (
            "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in skipped[:5]) or "empty") + ")")
    return Photos(root, pictures, skipped)


def scraped(picture: Picture, scrape: Scrape | None) -> Picture:
    """The photo after a platform's recompression or resize: a new picture (its own content
    key, so it is detected and aligned again)."""
    if scrape is None:
        return picture
    pixels = scrape.transform(picture.load())
    return Picture(picture.identity, picture.name, picture_key(pixels), _pixels=pixels,
                   source=picture.source)


def face_crops(pictures: list[Picture], spec: dict, aligner: Aligner
               ) -> tuple[list[Picture], list[dict], list[dict]]:
    """(crops, photos without a usable face with the reason, notes such as several faces)."""
    crops, no_face, notes = [], [], []
    for p in pictures:
        try:
            crops.append(aligner.crop_picture(p, spec))
            _, note = aligner.face(p)
            if note:
                notes.append({"photo": p.name, "note": note})
        except NoFace as err:
            no_face.append({"photo": p.name, "reason": str(err)})
    return crops, no_face, notes
