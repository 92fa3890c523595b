"""FAISS nearest-neighbour search: exact L2, on a GPU where one and a FAISS GPU build exist."""
from __future__ import annotations

import logging

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are noise
import faiss  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FlatL2Index:
    """`search(gallery, queries, k)` -> (squared L2 distances, gallery indices), each (Q, k).

    `device`: "auto" (GPU when available), "cpu" or "gpu" (an error if there is none).
    """

    def __init__(self, device: str = "auto"):
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"index.device must be auto, cpu or gpu, not {device!r}")
        if device == "gpu" and not gpu_available():
            raise RuntimeError("index.device=gpu but FAISS sees no GPU (is faiss-gpu installed? "
                               "`pip install facecure[gpu]` after removing faiss-cpu)")
        self.use_gpu = device == "gpu" or (device == "auto" and gpu_available())
        self._resources = faiss.StandardGpuResources() if self.use_gpu else None

    @property
    def device(self) -> str:
        return "gpu" if self.use_gpu else "cpu"

    def build(self, gallery: np.ndarray) -> faiss.Index:
        index = faiss.IndexFlatL2(gallery.shape[1])
        if self.use_gpu:
            index = faiss.index_cpu_to_gpu(self._resources, 0, index)
        index.add(np.ascontiguousarray(gallery, dtype=np.float32))
        return index

    def search(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(gallery))
        dist, idx = self.build(gallery).search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return dist, idx
