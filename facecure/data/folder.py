"""`data=folder`: one sub-folder per identity, pictures in any common format.

Every file is decoded once up front, so a corrupt or unsupported file is named in a warning and
in the run's outputs instead of failing an hour into a sweep.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from facecure.data.dataset import FaceDataset, Picture
from facecure.data.images import IMAGE_SUFFIXES, UnreadablePicture, load_picture
from facecure.utils.io import picture_key

log = logging.getLogger(__name__)


def read_pictures(folder: Path, identity: str, skipped: list[dict]) -> list[Picture]:
    """Every picture file directly in `folder`, decoded once (its content key), labelled
    `identity`; files that are not readable pictures are appended to `skipped` with why."""
    pictures = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"path": str(path), "reason": f"not a picture suffix ({path.suffix})"})
            continue
        try:
            key = picture_key(load_picture(path))
        except UnreadablePicture as err:
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        pictures.append(Picture(identity, path.name, key, _loader=partial(load_picture, path),
                                source=str(path)))
    return pictures


def folder_faces(root: str, name: str = "folder", min_pictures: int = 2, aligned: bool = False,
                 progress: bool = True) -> FaceDataset:
    """Scan `root/<identity>/<picture>`; skip unreadable files and identities with too few.

    `aligned`: the pictures are face crops already (no detection); else each extractor gets its
    own crop of every photo (`facecure.faces`).
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise FileNotFoundError(f"data.root={root!r} is not a folder. Expected one sub-folder per "
                                "identity holding that identity's pictures.")
    identities, skipped = {}, []
    folders = sorted(p for p in root_path.iterdir() if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"{root_path} holds no identity sub-folders")
    for folder in tqdm(folders, desc=f"scan {name}", disable=not progress, unit="id", leave=False):
        pictures = read_pictures(folder, folder.name, skipped)
        if len(pictures) < min_pictures:
            skipped.append({"identity": folder.name, "reason": f"{len(pictures)} readable picture(s), "
                            f"fewer than data.min_pictures={min_pictures}"})
            continue
        identities[folder.name] = pictures
    for item in skipped:
        log.warning("skipped %s: %s", item.get("path") or f"identity {item['identity']}", item["reason"])
    if not identities:
        raise ValueError(f"{root_path}: no identity has at least {min_pictures} readable pictures")
    return FaceDataset(name, identities, synthetic=False, skipped=skipped, aligned=aligned,
                       min_pictures=min_pictures)
