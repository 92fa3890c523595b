"""`make bench`: each real face model's embedding (forward) and attack (forward + backward)
throughput on this CPU, pictures/s at batch 16 on its own input size, 1 and 2 threads.

time.perf_counter over a fixed number of batches after one warm-up batch; random pictures
(the cost does not depend on the content).
"""
from __future__ import annotations

import time

import torch

from facecure.extractors import create_extractor

MODELS = ("dlib", "mobileface", "mobilefacenet", "faceres", "faceres_deep")
BATCH, ROUNDS = 16, 3


def rate(extractor, size: int, backward: bool) -> float:
    x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))

    def step():
        xi = x.clone().requires_grad_(backward)
        z = extractor(xi)
        if backward:
            z.pow(2).sum().backward()

    with torch.set_grad_enabled(backward):
        step()
        t = time.perf_counter()
        for _ in range(ROUNDS):
            step()
    return BATCH * ROUNDS / (time.perf_counter() - t)


def main() -> None:
    print(f"\nReal face models (pictures/s, batch {BATCH}, {ROUNDS} batches, own input size)")
    print(f"{'model':<14} {'size':>5} {'fwd 1 thr':>10} {'fwd+bwd 1':>10} {'fwd 2 thr':>10} "
          f"{'fwd+bwd 2':>10}")
    for name in MODELS:
        try:
            extractor = create_extractor(name)
        except FileNotFoundError as err:
            print(f"{name:<14} weights missing ({err}); make weights-real")
            continue
        size, cells = extractor.input_size, []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cells += [rate(extractor, size, False), rate(extractor, size, True)]
        print(f"{name:<14} {size:>5} " + " ".join(f"{c:>10.1f}" for c in cells))


if __name__ == "__main__":
    main()
