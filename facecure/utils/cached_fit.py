"""`cached_fit`: train something once, under a lock, and keep it by a key of what shapes it.

Every trained thing (zoo members, the zoo's CLIP, the robust and end-to-end fine-tunes, the
CLIP fine-tune, the perturbation detector) goes through here: its key is its recipe, its data
and the numerics of the Lightning trainer that fits it, so a `trainer=gpu` (16-bit mixed, on a
GPU) fit never loads as, nor is skipped as, the fp32 CPU one. Concurrent jobs of a sweep: one
trains, the others wait and load. A killed fit resumes from `<path>.work/last.ckpt`.

Every fit runs on `FIT_THREADS` intra-op threads, whatever the machine: CPU kernels split their
sums by thread, so the same recipe on 1 and on 2 threads gives different weights (measured: a
tiny zoo member after 2 epochs, max weight difference 8e-3), and every number downstream moves.
On one kind of CPU a fit is then bit-for-bit the same on any number of cores; across CPU kinds
(AVX2 / AVX-512 kernels) small float differences remain (docs/experiments.md, "Reruns").
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facecure.utils.io import atomic_write_bytes, exclusive, fingerprint

log = logging.getLogger(__name__)

# Trainer settings that change how a fit is shown, not what it computes.
PRESENTATION = ("enable_progress_bar", "enable_model_summary", "enable_checkpointing", "logger",
                "log_every_n_steps", "default_root_dir", "devices", "callbacks")
FIT_THREADS = 2  # what every cached model here was trained with (this project's 2-core machine)
# The numerics every fit had before the trainer entered the key: a fit under them keeps its
# old key, so models cached then load as they are.
DEFAULT_NUMERICS = {"accelerator": "cpu", "precision": "32-true", "deterministic": False}


def trainer_numerics(trainer: dict | None) -> dict:
    """The trainer settings that change the weights, with `accelerator: auto` resolved to what
    Lightning would pick here and precision spelled as Lightning names it."""
    trainer = dict(trainer or {})
    out = {k: v for k, v in trainer.items() if k not in PRESENTATION}
    accelerator = str(out.get("accelerator", "auto"))
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    out["accelerator"] = "gpu" if accelerator == "cuda" else accelerator
    precision = str(out.get("precision", "32-true"))
    out["precision"] = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}.get(precision,
                                                                                   precision)
    out["deterministic"] = out.get("deterministic", False) or False
    return out


def fit_key(key: dict, trainer: dict | None) -> dict:
    """`key` with the trainer's numerics in it where they differ from the default fp32 CPU fit."""
    numerics = trainer_numerics(trainer)
    return key if numerics == DEFAULT_NUMERICS else {**key, "trainer": numerics}


@contextlib.contextmanager
def fit_threads(n: int = FIT_THREADS) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Fitted:
    state: Any          # what was saved (a state dict, or a dict holding one)
    fingerprint: str    # of the key, trainer numerics included
    path: Path


def cached_fit(cache_dir: str | Path, prefix: str | None, key: dict,
               fit: Callable[[Path], None], state: Callable[[], Any],
               trainer: dict | None = None, what: str | None = None) -> Fitted:
    """The saved state of the fit keyed by `key` (and `trainer`'s numerics): loaded from
    `cache_dir/<prefix>-<fingerprint>.pt` when there, else `fit(work_dir)` runs (resuming from
    `work_dir`) and `state()` is saved atomically. Loads with `weights_only=True`."""
    fp = fingerprint(fit_key(key, trainer))
    path = Path(cache_dir) / (f"{prefix}-{fp}.pt" if prefix else f"{fp}.pt")
    with exclusive(path):  # concurrent jobs: one trains, the others load
        if not path.exists():
            log.info("training %s (first use; cached at %s)", what or path.stem, path)
            with fit_threads():
                fit(path.with_suffix(".work"))
            buf = io.BytesIO()
            torch.save(state(), buf)
            atomic_write_bytes(path, buf.getvalue())
            shutil.rmtree(path.with_suffix(".work"), ignore_errors=True)  # the resume checkpoints
    return Fitted(torch.load(path, map_location="cpu", weights_only=True), fp, path)
