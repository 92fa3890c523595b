"""A tfjs weightsManifest's tensors, read from its .bin shards (the dlib port and the graph
models share this): float32/int32 as stored, float16 upcast as tfjs does, affine uint8/uint16
dequantised (value = q * scale + min)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_BYTES = {"float32": 4, "int32": 4, "float16": 2, "uint16": 2, "uint8": 1, "bool": 1}


def dequantise(raw: bytes, spec: dict) -> np.ndarray:
    """One tensor's bytes -> its array (float32, or int32 for shapes/axes), manifest shape."""
    quant = spec.get("quantization")
    if quant is None:
        values = np.frombuffer(raw, dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
    elif quant["dtype"] == "float16":
        values = np.frombuffer(raw, dtype="<f2")
    else:
        q = np.frombuffer(raw, dtype=np.dtype(quant["dtype"]).newbyteorder("<"))
        values = q.astype(np.float64) * quant["scale"] + quant["min"]
    dtype = np.int32 if spec["dtype"] == "int32" else np.float32
    return values.astype(dtype).reshape(spec["shape"])


def nbytes(spec: dict) -> int:
    return int(np.prod(spec["shape"], dtype=np.int64)) * _BYTES[(spec.get("quantization") or spec)["dtype"]]


def read_shards(manifest: list[dict], folder: Path, who: str, listed_in: str, published: str,
                missing: type[FileNotFoundError]) -> dict[str, np.ndarray]:
    """Every tensor of `manifest` by name. A missing shard raises `missing`; a shard whose size
    is not what the manifest needs is refused as truncated or corrupt (`who` starts messages)."""
    out = {}
    for group in manifest:
        blob = b""
        for shard in group["paths"]:
            path = Path(folder) / shard
            if not path.is_file():
                raise missing(f"{who}: weights shard {path} (listed in {listed_in}) not found. "
                              f"The weights are published in the {published}.")
            blob += path.read_bytes()
        need = sum(nbytes(s) for s in group["weights"])
        if len(blob) != need:
            raise ValueError(f"{who}: shard(s) {group['paths']} in {folder} hold {len(blob)} "
                             f"bytes, the manifest needs {need}; the download is truncated or "
                             f"corrupt (fetch again: {published})")
        offset = 0
        for spec in group["weights"]:
            size = nbytes(spec)
            out[spec["name"]] = dequantise(blob[offset:offset + size], spec)
            offset += size
    return out
