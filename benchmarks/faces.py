"""`make bench`: detection and alignment of real photos on this CPU, and proof that a rerun
reuses the crop store (no detector call).

Photos: ../shared/faces/celeba150 where it exists (the first 300 photos), else the real photos
`make test` installs (insightface's t1.jpg and face-api's demo pictures). Two torch threads;
time.perf_counter, peak memory the process's max RSS. Target: at least 10 photos/s.
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from facecure.data import folder_faces
from facecure.data.dataset import FaceDataset
from facecure.faces import Aligner, FaceDetector, align_dataset, crop_spec
from facecure.paths import PROJECT_ROOT

TARGET = 10.0  # photos/s, detection + one crop
CELEBA = PROJECT_ROOT.parent / "shared" / "faces" / "celeba150"


def photos(limit: int = 300) -> tuple[FaceDataset, str]:
    if CELEBA.is_dir():
        data = folder_faces(str(CELEBA), progress=False)
        where = f"the first {limit} photos of {CELEBA}"
    else:
        import importlib.util
        root = Path(tempfile.mkdtemp()) / "photos"
        sources = [Path(importlib.util.find_spec("insightface").origin).parent / "data/images/t1.jpg",
                   *sorted((PROJECT_ROOT / ".cache/face-api/demo").glob("sample*.jpg"))]
        for i, src in enumerate(sources):
            (root / f"p{i % 3}").mkdir(parents=True, exist_ok=True)
            (root / f"p{i % 3}" / src.name).write_bytes(src.read_bytes())
        data = folder_faces(str(root), progress=False)
        where = f"{len(sources)} photos installed by make test"
    kept, n = {}, 0
    for identity, pics in data.identities.items():
        if n >= limit:
            break
        kept[identity] = pics[: limit - n]
        n += len(kept[identity])
    return FaceDataset(data.name, kept, False), where


def main() -> None:
    torch.set_num_threads(2)
    data, where = photos()
    n = len(data)
    with tempfile.TemporaryDirectory() as cache:
        detector = FaceDetector()
        t = time.perf_counter()
        align_dataset(data, crop_spec("arcface112"), Aligner(cache, detector), progress=False)
        cold = time.perf_counter() - t
        calls = detector.calls
        t = time.perf_counter()
        align_dataset(data, crop_spec("arcface112"), Aligner(cache, detector), progress=False)
        warm = time.perf_counter() - t
        t = time.perf_counter()
        align_dataset(data, crop_spec("dlib150"), Aligner(cache, detector), progress=False)
        other = time.perf_counter() - t
    rate = n / cold
    print(f"\nDetection and alignment ({where}; 2 threads)")
    print(f"{'step':<58} {'s':>7} {'photos/s':>9} {'detector calls':>15}")
    print(f"{'MTCNN + arcface112 crop, cold store':<58} {cold:7.1f} {rate:9.1f} {calls:>15}")
    print(f"{'rerun, same crop (crop store)':<58} {warm:7.1f} {n / warm:9.1f} {detector.calls - calls:>15}")
    print(f"{'another crop (dlib150) of the same photos':<58} {other:7.1f} {n / other:9.1f} "
          f"{detector.calls - calls:>15}")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB; "
          f"target >= {TARGET:g} photos/s: {'met' if rate >= TARGET else 'MISSED'}")
    if detector.calls != calls:
        sys.exit("a rerun called the detector: the crop store was not reused")


if __name__ == "__main__":
    main()
