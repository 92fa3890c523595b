"""Reading the weights a user brings, with one clear error per way it can go wrong.

Nothing is downloaded: every adapter reads a local file. A missing file names the file, the
expected format and where such weights are published; a file of another architecture names
the first mismatched keys and shapes instead of torch's 200-line traceback.
"""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint


class WeightsError(Exception):
    """The weights of an extractor cannot be used (see the subclasses)."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """The weights file is not there."""


class IncompatibleWeightsError(WeightsError, ValueError):
    """The file is there but unreadable, corrupt, or of another architecture."""


def require_file(path: str | Path, label: str, expected: str, published: str) -> Path:
    """`path` as a Path, or MissingWeightsError saying what to put there and where to get it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"{label}: weights file not found: {path}. Expected: {expected}. "
            f"Published at: {published or 'see conf/extractor/' + label + '.yaml'}. "
            f"Nothing is downloaded at run time: put the file there or set extractor.weights=<path>.")
    return path


def load_checkpoint(path: str | Path, label: str, expected: str, published: str,
                    weights_only: bool = True) -> Any:
    """Read a torch checkpoint (`torch.load`, CPU) or a `.safetensors` file."""
    path = require_file(path, label, expected, published)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if weights_only and "Unsupported global" in str(e):
            raise IncompatibleWeightsError(
                f"{label}: {path} holds pickled Python objects that torch.load(weights_only=True) "
                f"refuses ({_summary(e, 'Unsupported global')}). If you trust the file, set "
                f"extractor.weights_only=false.") from None
        raise _unreadable(path, label, expected, e) from None
    except Exception as e:  # torch/safetensors raise RuntimeError, EOFError, ... on bad files
        raise _unreadable(path, label, expected, e) from None


def _unreadable(path: Path, label: str, expected: str, error: Exception) -> IncompatibleWeightsError:
    return IncompatibleWeightsError(
        f"{label}: cannot read {path} as {expected} ({type(error).__name__}: "
        f"{_summary(error)}). Is the file truncated, or of another format?")


def _summary(error: Exception, prefer: str = "") -> str:
    """The first sentence of an error message (from `prefer` on, if it occurs): one line."""
    text = " ".join(str(error).split())
    if prefer and prefer in text:
        text = text[text.index(prefer):]
    return text.split(". ")[0][:200]


def state_dict_of(checkpoint: Any, keys: Iterable[str] = ("state_dict", "model"),
                  strip_module: bool = True) -> dict:
    """The tensor dict inside a checkpoint: `checkpoint[k]` for the first k present, else itself.

    A `module.` prefix on every key (DataParallel / DDP) is removed if `strip_module`.
    """
    for key in keys:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = dict(checkpoint) if isinstance(checkpoint, Mapping) else {}
    if strip_module and state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: Mapping[str, Any], path: str | Path, label: str,
              arch: str, ignore: Iterable[str] = ()) -> None:
    """`model.load_state_dict(state, strict=True)`, or one error listing the first mismatches.

    Keys starting with a prefix in `ignore` (a classifier head the extractor drops) are skipped.
    BatchNorm's `num_batches_tracked` counters may be absent (older exports): eval ignores them.
    """
    ignore = tuple(ignore)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(getattr(state[k], 'shape', ()))} vs model {tuple(own[k].shape)}"
              for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{title} {_first(items)}" for title, items in
                 (("shape mismatches", shapes), ("missing keys", missing),
                  ("unexpected keys", unexpected)) if items]
        raise IncompatibleWeightsError(
            f"{label}: {path} does not fit {arch}: " + "; ".join(parts)
            + ". Is it the right file, and do the architecture settings match it?")
    model.load_state_dict(state, strict=True)


def _first(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content (16 hex digits): the embedding cache keys on the weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def pretrained_extractor(name: str, backbone: nn.Module, weights: str | Path, embedding_dim: int,
                         input_size: int, *, mean, std, channels: str = "RGB",
                         value_range: float = 1.0, normalize: bool = True,
                         recipe: Mapping[str, Any] | None = None,
                         cls: type[Extractor] = Extractor) -> Extractor:
    """Wrap a loaded torch backbone in `cls`; the fingerprint covers weights and preprocessing."""
    fp = fingerprint({"weights": file_digest(weights), "input_size": input_size,
                      "mean": list(mean), "std": list(std), "channels": channels,
                      "value_range": value_range, "normalize": normalize, **(recipe or {})})
    backbone.eval()
    return cls(name, backbone, embedding_dim, input_size, fingerprint=f"{name}-{fp}",
                     mean=tuple(mean), std=tuple(std), channels=channels,
                     value_range=value_range, normalize=normalize, differentiable=True)
