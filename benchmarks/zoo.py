"""Train (or load) every zoo member; report its training time and clean 1-NN accuracy.

`python -m benchmarks.zoo [names...]`. Training time is wall time of the first build (0 when
the member was already cached: remove .cache/zoo/<name>-* to measure again).
"""
from __future__ import annotations

import sys
import time

import torch

from facecure.data.synthetic_dataset import synthetic_faces
from facecure.extractors.accuracy import clean_accuracy
from facecure.extractors.registry import create_extractor, extractor_config, list_extractors


def zoo_members() -> list[str]:
    return [n for n in list_extractors() if extractor_config(n).get("info", {}).get("zoo")]


def main(names: list[str]) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    evaluation = synthetic_faces(100, 20, 64, seed=0, progress=False)
    rows = []
    for name in names or zoo_members():
        t = time.perf_counter()
        extractor = create_extractor(name, trainer={"enable_progress_bar": False})
        built = time.perf_counter() - t
        acc = clean_accuracy(extractor, evaluation)
        rows.append((name, extractor_config(name).info.date, built, acc))
        print(f"{name:<16} date {rows[-1][1]}  build {built:7.1f} s  clean 1-NN accuracy {acc:.3f}",
              flush=True)
    print("\n| zoo member | date | build (s) | clean 1-NN accuracy (100 ids x 20, seed 0) |")
    print("|---|---|---|---|")
    for name, date, built, acc in sorted(rows, key=lambda r: r[1]):
        print(f"| {name} | {date} | {built:.0f} | {acc:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
