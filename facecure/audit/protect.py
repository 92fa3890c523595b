"""`facecure protect --attack fawkes_v10 --in photos/ --out protected/`: FaceCure's own cloak of a
folder of photos, written as whole photos the way the tools write theirs (the crop's cloak put
back with a soft edge). For audits of FaceCure-made protections; the real tools' outputs are
audited as they come.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from hydra.utils import instantiate
from PIL import Image

from facecure.attacks.store import PerturbedStore
from facecure.audit.photos import face_crops, read_folder
from facecure.audit.run import audit_config
from facecure.faces import Scrape
from facecure.faces.scrape import cloak_delta
from facecure.factory import Factory
from facecure.utils.io import atomic_write_bytes


def protect_folder(src: str, dst: str, attack: str, overrides: list[str] = (),
                   device: str = "cpu", progress: bool = True) -> dict:
    """Cloak every photo of `src` against the real world's surrogates of `attack` (an attack
    config name, "name/mode" for a mode) into `dst` as PNG; photos without a face are named."""
    name, _, mode = attack.partition("/")
    cfg = audit_config([f"attack={name}", *([f"attack.mode={mode}"] if mode else []), *overrides])
    factory = Factory(cfg, device)
    atk = factory.attack(cfg.attack)
    spec = getattr(atk, "crop_spec", None)
    if spec is None:
        raise ValueError(f"attack {attack} names no crop of its surrogates: nothing to cloak")
    aligner = instantiate(cfg.align, device=device)
    photos = read_folder(src, "me")
    crops, no_face, _ = face_crops(photos.pictures, spec, aligner)
    store = PerturbedStore(Path(cfg.paths.cache_dir) / "perturbed", cfg.attack.get("batch_size", 64),
                           device, None, aligner)
    twins, _ = store.perturb_pictures(atk, crops, progress)
    paste = Scrape(feather=4)
    out = Path(dst)
    for crop, twin in zip(crops, twins):
        photo = crop.origin.load()
        _, matrix = aligner.crop(crop.origin, spec)
        posted = paste.paste(photo, cloak_delta(twin.load(), crop.load()), matrix)
        buf = io.BytesIO()
        Image.fromarray(posted).save(buf, format="PNG")
        atomic_write_bytes(out / f"{Path(crop.name).stem}.png", buf.getvalue())
    return {"written": len(twins), "without_face": no_face, "unreadable": photos.skipped,
            "attack": atk.name, "fingerprint": atk.fingerprint}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[2:] if argv is None else argv
    p = argparse.ArgumentParser(prog="facecure protect", description=__doc__.split("\n")[0])
    p.add_argument("--attack", required=True, help="fawkes_v10 | fawkes_v10/low | lowkey | ...")
    p.add_argument("--in", dest="src", required=True, help="a folder of photos")
    p.add_argument("--out", required=True, help="where the protected photos go (PNG)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("overrides", nargs="*", help="Hydra overrides (paths.cache_dir=...)")
    args = p.parse_args(argv)
    try:
        done = protect_folder(args.src, args.out, args.attack, args.overrides, args.device)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"facecure protect: {err}", file=sys.stderr)
        return 2
    print(f"{done['written']} protected photos in {args.out} ({done['attack']})"
          + "".join(f"\n  no face: {x['photo']}: {x['reason']}" for x in done["without_face"]))
    return 0
