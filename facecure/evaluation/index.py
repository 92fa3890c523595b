"""FAISS nearest-neighbour search: exact L2 (`index=flat`), or approximate (`index=ivf`,
`index=hnsw`) with its recall measured, on a GPU where one and a FAISS GPU build exist."""
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

    kind = "flat"

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

    @property
    def recall_at_1(self) -> float | None:
        """Exact search: nothing to measure."""
        return None

    def _to_device(self, index: faiss.Index) -> faiss.Index:
        return faiss.index_cpu_to_gpu(self._resources, 0, index) if self.use_gpu else index

    def build(self, gallery: np.ndarray) -> faiss.Index:
        index = self._to_device(faiss.IndexFlatL2(gallery.shape[1]))
        index.add(np.ascontiguousarray(gallery, dtype=np.float32))
        return index

    def search(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.prepared(gallery)(queries, k)

    def prepared(self, gallery: np.ndarray):
        """`search(queries, k)` over one gallery, its index built once (the evaluator searches
        the same gallery several times)."""
        built, n = self.build(gallery), len(gallery)

        def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return built.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, n))
        return search


class ApproximateL2Index(FlatL2Index):
    """IVF (`kind=ivf`: k-means cells, `nprobe` of `nlist` visited) or HNSW (`kind=hnsw`: a
    navigable graph, `ef_search` candidates). A missed neighbour looks like protection, so each
    search also searches up to `recall_sample` of its queries exactly; `recall_at_1` is the
    share whose approximate first neighbour is as close as the exact one, over every search
    so far (the records carry it). HNSW runs on the CPU (FAISS has no GPU HNSW)."""

    def __init__(self, kind: str, device: str = "auto", nlist: int = 1024, nprobe: int = 16,
                 hnsw_m: int = 32, ef_search: int = 128, recall_sample: int = 1000, seed: int = 0):
        if kind not in ("ivf", "hnsw"):
            raise ValueError(f"index.kind must be ivf or hnsw, not {kind!r}")
        super().__init__(device if kind == "ivf" else ("cpu" if device == "auto" else device))
        if kind == "hnsw" and self.use_gpu:
            raise ValueError("index=hnsw runs on the CPU only (FAISS has no GPU HNSW): device=cpu")
        self.kind, self.nlist, self.nprobe = kind, int(nlist), int(nprobe)
        self.hnsw_m, self.ef_search, self.recall_sample = int(hnsw_m), int(ef_search), int(recall_sample)
        self.seed = seed
        self._hits, self._checked = 0, 0

    @property
    def recall_at_1(self) -> float | None:
        return self._hits / self._checked if self._checked else None

    def build(self, gallery: np.ndarray) -> faiss.Index:
        x = np.ascontiguousarray(gallery, dtype=np.float32)
        d = x.shape[1]
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m)
            index.hnsw.efSearch = self.ef_search
            index.add(x)
            return index
        # FAISS wants >= 39 training points a cell; a small gallery gets fewer cells.
        nlist = max(1, min(self.nlist, len(x) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = self.seed
        index.train(x)
        index.add(x)
        index.nprobe = min(self.nprobe, nlist)
        return self._to_device(index)

    def prepared(self, gallery: np.ndarray):
        approximate, n = self.build(gallery), len(gallery)
        exact = []  # the exact index, whatever self builds: made at the first search

        def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            q = np.ascontiguousarray(queries, dtype=np.float32)
            dist, idx = approximate.search(q, min(k, n))
            if len(q):
                exact or exact.append(FlatL2Index.build(self, gallery))
                rng = np.random.default_rng([self.seed, n, len(q)])
                sample = rng.choice(len(q), min(self.recall_sample, len(q)), replace=False)
                best, _ = exact[0].search(q[sample], 1)
                # As close as the exact neighbour (ties: another row as close is fine).
                self._hits += int((dist[sample, 0] <= best[:, 0] * (1 + 1e-5) + 1e-6).sum())
                self._checked += len(sample)
            return dist, idx
        return search
