"""Public face data sets in their own layouts: CelebA (`data=celeba`), FaceScrub (`data=facescrub`).

Both give in-the-wild photos; each extractor then gets its own crop (`facecure.faces`). Every
file is decoded once up front, so a corrupt download is named before any model runs.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from facecure.data.dataset import FaceDataset, Picture
from facecure.data.images import IMAGE_SUFFIXES, UnreadablePicture, load_picture
from facecure.utils.io import picture_key

log = logging.getLogger(__name__)


def _first(root: Path, *candidates: str) -> Path | None:
    return next((root / c for c in candidates if (root / c).exists()), None)


def _read(path: Path, identity: str, skipped: list, box=None) -> Picture | None:
    try:
        key = picture_key(load_picture(path))
    except UnreadablePicture as err:
        skipped.append({"path": str(path), "reason": str(err)})
        return None
    return Picture(identity, path.name, key, _loader=partial(load_picture, path), box=box,
                   source=str(path))


def _finish(name: str, identities: dict, skipped: list, min_pictures: int) -> FaceDataset:
    kept = {}
    for identity, pictures in identities.items():
        if len(pictures) < min_pictures:
            skipped.append({"identity": identity, "reason": f"{len(pictures)} readable picture(s), "
                            f"fewer than data.min_pictures={min_pictures}"})
        else:
            kept[identity] = pictures
    for item in skipped:
        log.warning("skipped %s: %s", item.get("path") or f"identity {item['identity']}", item["reason"])
    if not kept:
        raise ValueError(f"{name}: no identity has at least {min_pictures} readable pictures")
    return FaceDataset(name, kept, synthetic=False, skipped=skipped, min_pictures=min_pictures)


def _identity_list(identities) -> set[int] | None:
    if identities is None:
        return None
    if isinstance(identities, str):
        path = Path(identities).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data.identities={identities!r}: no such file (one CelebA "
                                    "identity number per line)")
        identities = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return {int(i) for i in identities}


def celeba_faces(root: str, name: str = "celeba", identities=None, max_identities: int | None = None,
                 min_pictures: int = 10, progress: bool = True) -> FaceDataset:
    """CelebA's `img_celeba/` photos grouped by `identity_CelebA.txt` ("<file> <identity>")."""
    root_path = Path(root).expanduser()
    labels = _first(root_path, "identity_CelebA.txt", "Anno/identity_CelebA.txt")
    images = _first(root_path, "img_celeba", "Img/img_celeba")
    if labels is None or images is None:
        raise FileNotFoundError(
            f"data.root={root!r} must hold CelebA's img_celeba/ (the in-the-wild photos) and "
            "identity_CelebA.txt (or Img/img_celeba and Anno/identity_CelebA.txt); found "
            f"{'neither' if labels is None and images is None else 'only one'} of them")
    wanted = _identity_list(identities)
    by_identity: dict[int, list[str]] = {}
    for n, line in enumerate(labels.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{labels}:{n}: expected '<file name> <identity number>', got {line!r}")
        if wanted is None or int(parts[1]) in wanted:
            by_identity.setdefault(int(parts[1]), []).append(parts[0])
    chosen = sorted(i for i, files in by_identity.items() if len(files) >= min_pictures)
    if max_identities is not None:
        chosen = chosen[:max_identities]
    grouped, skipped = {}, []
    for number in tqdm(chosen, desc=f"scan {name}", disable=not progress, unit="id", leave=False):
        identity = f"celeba_{number:05d}"
        pictures = []
        for file_name in by_identity[number]:
            path = images / file_name
            if not path.is_file():
                skipped.append({"path": str(path), "reason": "listed in identity_CelebA.txt, not on disk"})
                continue
            picture = _read(path, identity, skipped)
            if picture is not None:
                pictures.append(picture)
        grouped[identity] = pictures
    return _finish(name, grouped, skipped, min_pictures)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def facescrub_faces(root: str, name: str = "facescrub",
                    lists=("facescrub_actors.txt", "facescrub_actresses.txt"),
                    check_sha256: bool = True, min_pictures: int = 2,
                    progress: bool = True) -> FaceDataset:
    """FaceScrub's lists (tab-separated: name, image_id, face_id, url, bbox "x1,y1,x2,y2",
    sha256) against the photos downloaded into `root/<name>/<face_id>.<ext>`. The listed box
    picks the face in each photo (`Picture.box`)."""
    root_path = Path(root).expanduser()
    found_lists = [root_path / f for f in lists if (root_path / f).is_file()]
    if not found_lists:
        raise FileNotFoundError(f"data.root={root!r} holds none of FaceScrub's lists "
                                f"({', '.join(lists)}): put them beside the downloaded photos")
    grouped: dict[str, list[Picture]] = {}
    skipped: list[dict] = []
    rows = []
    for path in found_lists:
        with open(path, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = {"name", "face_id", "bbox"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: not a FaceScrub list (no column {', '.join(sorted(missing))})")
            rows += list(reader)
    for row in tqdm(rows, desc=f"scan {name}", disable=not progress, unit="pic", leave=False):
        person = row["name"].strip()
        folder = _first(root_path, person.replace(" ", "_"), person)
        files = []
        if folder is not None:
            files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                     and p.stem in (row["face_id"], f"{person.replace(' ', '_')}_{row['face_id']}")]
        grouped.setdefault(person, [])
        if not files:
            skipped.append({"path": f"{person}/{row['face_id']}", "reason": "listed, not downloaded"})
            continue
        path = files[0]
        if check_sha256 and row.get("sha256") and _sha256(path) != row["sha256"].strip():
            skipped.append({"path": str(path), "reason": "differs from the listed sha256 (a changed "
                            "or wrong download; data.check_sha256=false keeps it)"})
            continue
        try:
            box = tuple(float(v) for v in row["bbox"].split(","))
            assert len(box) == 4
        except (ValueError, AssertionError):
            skipped.append({"path": str(path), "reason": f"bbox {row['bbox']!r} is not x1,y1,x2,y2"})
            continue
        picture = _read(path, person, skipped, box)
        if picture is not None:
            grouped[person].append(picture)
    return _finish(name, grouped, skipped, min_pictures)
