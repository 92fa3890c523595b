"""Real photos for tests: six identities of ../shared/faces/celeba150 where it exists; elsewhere
the faces of the photos that `make test` installs (face-api's demo, insightface's samples), each
face an identity whose "photos" are jittered re-framings of its one photo (a pipeline check, not
a measurement). Import the fixtures into a test module to use them."""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from facecure.paths import PROJECT_ROOT

CACHE = Path(os.environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache")  # read at collection
CELEBA150 = PROJECT_ROOT.parent / "shared" / "faces" / "celeba150"
N_IDENTITIES, N_PHOTOS = 6, 6


def installed_photos() -> list[Path]:
    samples = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images"
    return sorted((CACHE / "face-api" / "demo").glob("sample*.jpg")) + [samples / "t1.jpg"]


def reframed_identities(root: Path) -> None:
    """Each large face of the installed photos as an identity of N_PHOTOS re-framings (shifted,
    rescaled, mirrored, relit), written as JPEG photos with background around the face."""
    from facenet_pytorch import MTCNN

    detector = MTCNN(keep_all=True, device="cpu")
    rng = np.random.default_rng(0)
    n = 0
    for path in installed_photos():
        photo = Image.open(path).convert("RGB")
        boxes, _ = detector.detect(photo)
        for box in [] if boxes is None else boxes:
            side = min(box[2] - box[0], box[3] - box[1])
            if side < 60 or n == N_IDENTITIES:
                continue
            folder = root / f"face_{n:02d}"
            folder.mkdir()
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            for k in range(N_PHOTOS):
                half = side * rng.uniform(1.2, 1.6)
                dx, dy = rng.uniform(-0.1, 0.1, 2) * side
                crop = photo.crop((cx + dx - half, cy + dy - half, cx + dx + half, cy + dy + half))
                crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.85, 1.15))
                if k % 2:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                crop.resize((int(2 * half * rng.uniform(0.8, 1.0)),) * 2).save(folder / f"{k}.jpg")
            n += 1
    assert n == N_IDENTITIES, f"only {n} faces of 60 px or more in {installed_photos()}"


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real_photos")
    if CELEBA150.is_dir():  # research use only: linked, never copied into the project
        for folder in sorted(CELEBA150.iterdir())[:N_IDENTITIES]:
            (root / folder.name).mkdir()
            for photo in sorted(folder.iterdir())[:N_PHOTOS]:
                (root / folder.name / photo.name).symlink_to(photo)
    else:
        reframed_identities(root)
    return root


@pytest.fixture
def real_models(cache_dir) -> None:
    """The real models' weights (make test installs them) seen from the test's private cache."""
    for name in ("face-api", "human-models"):
        if not (CACHE / name).is_dir():
            pytest.fail(f"{CACHE / name} missing: `make weights-real` fetches it")
        if not (cache_dir / name).exists():
            (cache_dir / name).symlink_to(CACHE / name)
