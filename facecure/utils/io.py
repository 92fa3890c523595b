"""Content keys and atomic writes.

Stores are shared by SLURM jobs running at once, so every write goes to a temporary file in
the destination folder and is renamed into place: a reader sees the whole file or nothing.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def fingerprint(obj: Any, length: int = 16) -> str:
    """Stable hex digest of a JSON-serialisable object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def picture_key(pixels: np.ndarray) -> str:
    """Key of a picture by its content: uint8 HxWx3 RGB array -> 20 hex characters."""
    h = hashlib.sha1(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()[:20]


def _file_mode() -> int:
    """The mode open() would give a new file: mkstemp's 0600 would hide results (and error
    logs) from the rest of a cluster group; the user's umask decides, as for any file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """Hold an inter-process lock on `path` (flock on `path`.lock): when a sweep's jobs share a
    cache, one trains the model cached at `path` while the others wait, then load it."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
