"""A small real-world run: world=real's roles, real photos (detected and aligned), the real
models as trainer and surrogate. The full experiments are `make reproduce-real`.

The photos: six identities of ../shared/faces/celeba150 where it exists; elsewhere the faces
of the photos that `make test` installs (face-api's demo, insightface's samples), each face
an identity whose "photos" are jittered re-framings of its one photo (a pipeline check, not
a measurement)."""
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from facecure.paths import PROJECT_ROOT
from facecure.results import read_results

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


def test_a_small_real_world_baseline(compose_cfg, real_photos, real_models, tmp_path):
    from facecure.app import run
    from facecure.report import build_report

    common = ["world=real", "experiment=baseline", "attack=fawkes_v10", "attack.mode=low",
              "attack.steps=2", f"data.root={real_photos}", f"data.min_pictures={N_PHOTOS - 2}",
              "n_attackers=2", "progress=false"]
    # The oldest era (dlib, on its own chip), then the standard model (the paper's WebFace:
    # mobileface here), which is the attack's surrogate.
    for extractor in ("dlib", "mobileface"):
        run(compose_cfg(*common, f"extractor={extractor}", f"+run_dir={tmp_path / extractor}"))
    records = {e: read_results(tmp_path / e / "results.jsonl") for e in ("dlib", "mobileface")}
    run_record = records["dlib"][0]
    assert run_record["world"] == "real" and run_record["crop"]["kind"] == "dlib150"
    assert run_record["attack_crop"]["kind"] == "arcface112"  # mobileface's, moved onto dlib's
    for extractor, role, white in (("dlib", None, False), ("mobileface", "webface", True)):
        attacked = [r for r in records[extractor] if r["kind"] == "attacker"
                    and r["attack"] == "fawkes_v10"]
        assert len(attacked) == 2
        assert {(r["world"], r["extractor_role"], r["white_box"]) for r in attacked} == \
            {("real", role, white)}
        assert all(0 <= r["protection_rate"] <= 1 and r["n_perturbed"] > 0 for r in attacked)
        assert all(0 < r["budget"]["linf_max"] <= 15 / 255 + 1e-6 for r in attacked)
    text = build_report(tmp_path).read_text()
    assert "Worlds: **real** (data: " in text
    assert "- white-box (protection >= 80% against the attack's own surrogate): " in text
    assert "fawkes_v10 (low) vs mobileface" in text  # the one white-box row is judged
    checks = {c["name"]: c for c in json.loads((tmp_path / "checks.json").read_text())}
    assert checks["white-box"]["passed"] in (True, False) and checks["detection"]["passed"] is None
