"""Embeddings cached per (extractor fingerprint, picture content).

A sweep embeds each clean picture once per extractor, whatever the number of attacks, attacker
users and defenses that reuse it. Each batch of new embeddings is one shard file written
atomically under a unique name, so concurrent jobs never clash and a killed run keeps every
shard it finished.
"""
from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from facecure.data.dataset import Picture
from facecure.extractors.base import Extractor
from facecure.utils.io import atomic_write_bytes


class EmbeddingStore:
    """`embed(extractor, pictures)` -> float32 (N, D), computing only what is not stored."""

    def __init__(self, root: str | Path, shard_size: int = 4096, batch_size: int = 256):
        self.root, self.shard_size, self.batch_size = Path(root), shard_size, batch_size
        self._known: dict[str, dict[str, np.ndarray]] = {}

    def _load(self, fp: str) -> dict[str, np.ndarray]:
        if fp not in self._known:
            known = {}
            for shard in sorted((self.root / fp).glob("*.npz")):
                with np.load(shard) as z:
                    known.update(zip(z["keys"].tolist(), z["embeddings"]))
            self._known[fp] = known
        return self._known[fp]

    def embed(self, extractor: Extractor, pictures: Sequence[Picture],
              progress: bool = True) -> np.ndarray:
        fp = extractor.fingerprint
        known = self._load(fp)
        missing = list({p.key: p for p in pictures if p.key not in known}.values())
        bar = tqdm(total=len(missing), desc=f"embed with {extractor.name}", unit="pic",
                   disable=not progress or not missing, leave=False)
        for start in range(0, len(missing), self.shard_size):
            chunk = missing[start:start + self.shard_size]
            parts = []
            for b in range(0, len(chunk), self.batch_size):
                batch = chunk[b:b + self.batch_size]
                parts.append(extractor.embed([p.load() for p in batch], self.batch_size).numpy())
                bar.update(len(batch))
            emb = np.concatenate(parts).astype(np.float32)
            buf = io.BytesIO()
            np.savez(buf, keys=np.array([p.key for p in chunk]), embeddings=emb)
            atomic_write_bytes(self.root / fp / f"{uuid.uuid4().hex}.npz", buf.getvalue())
            known.update(zip((p.key for p in chunk), emb))
        bar.close()
        if not pictures:
            return np.zeros((0, extractor.embedding_dim), np.float32)
        return np.stack([known[p.key] for p in pictures])
