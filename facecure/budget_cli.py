"""facecure-budget A B [--json]: what separates two pictures of one size.

DSSIM, L-inf (0-1 pixel units), PSNR (dB), LPIPS-Alex and LPIPS-VGG v0.1 (inputs scaled to
[-1, 1], as the reference implementation). LPIPS' trunks come from `make weights-lpips`.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from facecure.attacks.budget import dssim, linf, psnr
from facecure.attacks.lpips_net import lpips_distance
from facecure.data.images import UnreadablePicture, load_picture
from facecure.extractors.base import to_tensor


def budget(a: torch.Tensor, b: torch.Tensor, alexnet: str | None = None,
           vgg: str | None = None) -> dict[str, float]:
    """Distances of two (3, H, W) RGB pictures in [0, 1], keyed as --json prints them."""
    if a.shape != b.shape:
        raise ValueError(f"the pictures differ in size ({a.shape[2]}x{a.shape[1]} and "
                         f"{b.shape[2]}x{b.shape[1]} pixels): budgets compare one size")
    x, y = a[None], b[None]
    return {"dssim": float(dssim(y, x)[0]), "linf": float(linf(y, x)[0]),
            "psnr": float(psnr(y, x)[0]),
            "lpips_alex": float(lpips_distance(y, x, alexnet, net="alex")[0]),
            "lpips_vgg": float(lpips_distance(y, x, vgg, net="vgg")[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facecure-budget", description=__doc__.split("\n")[0])
    parser.add_argument("a", help="a picture (the original)")
    parser.add_argument("b", help="a picture of the same size (e.g. its protected twin)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--alexnet-weights", help="LPIPS-Alex trunk (default: the cache's)")
    parser.add_argument("--vgg-weights", help="LPIPS-VGG trunk (default: the cache's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))  # two small pictures: no gain beyond
    try:
        a, b = (to_tensor(load_picture(p)) for p in (args.a, args.b))
        result = budget(a, b, args.alexnet_weights, args.vgg_weights)
    except (UnreadablePicture, ValueError, FileNotFoundError) as err:
        print(f"facecure-budget: {err}", file=sys.stderr)
        return 2
    for key, label in [("dssim", "DSSIM"), ("linf", "L-inf"), ("psnr", "PSNR (dB)"),
                       ("lpips_alex", "LPIPS-Alex"), ("lpips_vgg", "LPIPS-VGG")]:
        print(f"{label:<11} {result[key]:.4f}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
