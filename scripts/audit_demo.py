"""The audit on held-out real identities: each cloaked by FaceCure with Fawkes v1.0 and LowKey,
audited protected and unprotected, among the other identities of the real world's data.

    .venv/bin/python scripts/audit_demo.py [--identities 3] [--out outputs/audit-demo]

Held out: identities the real world's adaptive trainer does not own (its public users), with
at least 25 usable photos: the first 20 are "posted", the last 5 the probes. The photos stay
where they are (linked); the protected ones and the reports go under --out (never commit
them: CelebA is for research use only). summary.md lists the verdicts and wall times.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from facecure.audit.cli import main as audit_main
from facecure.audit.protect import protect_folder
from facecure.audit.run import audit_config
from facecure.data.images import IMAGE_SUFFIXES
from facecure.defenses import split_public
from facecure.paths import PROJECT_ROOT

ATTACKS = ("fawkes_v10", "lowkey")


def held_out(root: Path, n: int, public_fraction: float, seed: int) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    public, _ = split_public([p.name for p in folders], public_fraction, seed)
    big = [p for p in folders if p.name not in set(public)
           and sum(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()) >= 25]
    return big[:n]


def link_photos(photos: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        if not (folder / p.name).exists():
            (folder / p.name).symlink_to(p.resolve())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--identities", type=int, default=3)
    ap.add_argument("--out", default=str(PROJECT_ROOT / "outputs" / "audit-demo"))
    ap.add_argument("--adaptive", action="store_true", help="also --adaptive (needs the real "
                    "world's adaptive and detection runs)")
    args = ap.parse_args()
    cfg = audit_config([])
    root, out = Path(cfg.data.root), Path(args.out)
    rows = []
    for folder in held_out(root, args.identities, cfg.scale.public_fraction, cfg.seed):
        photos = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        me = out / folder.name
        link_photos(photos[:20], me / "clean")
        link_photos(photos[-5:], me / "probe")
        for attack in ATTACKS:
            t = time.time()
            protect_folder(str(me / "clean"), str(me / f"posted_{attack}"), attack)
            protect_s = time.time() - t
            argv = ["--posted", str(me / f"posted_{attack}"), "--probe", str(me / "probe"),
                    "--clean", str(me / "clean"), "--exclude", folder.name,
                    "--out", str(me / f"audit_{attack}"), "--no-progress",
                    *(["--adaptive"] if args.adaptive else [])]
            t = time.time()
            if audit_main(argv) != 0:
                return 1
            verdict = json.loads((me / f"audit_{attack}" / "verdict.json").read_text())
            rows.append({"identity": folder.name, "attack": attack, "protect_s": protect_s,
                         "audit_s": time.time() - t, "verdict": verdict,
                         "command": "facecure audit " + shlex.join(argv)})
    lines = ["# The audit on held-out real identities", "",
             f"{len(rows) // len(ATTACKS)} identities of `{root}` (not the trainer's public "
             "users), 20 posted and 5 probe photos each, among the other identities; cloaks by "
             "FaceCure (`facecure protect`). Rank-1 of the 5 probes: protected as posted / after "
             "JPEG 70 / unprotected; TPIR at FPIR 1e-3 protected as posted.", "",
             "| identity | attack | model | protected | jpeg70 | unprotected | TPIR@1e-3 | "
             "protect s | audit s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in r["verdict"]["models"]:
            c = m["conditions"]
            lines.append(
                f"| {r['identity']} | {r['attack']} | {m['name']} ({m['date']}) | "
                f"{c['protected, as posted']['rank1']:.0%} | "
                f"{c.get('protected, jpeg70', {}).get('rank1', float('nan')):.0%} | "
                f"{c['unprotected']['rank1']:.0%} | {m['tpir'].get('fpir1e-3', float('nan')):.0%} | "
                f"{r['protect_s']:.0f} | {r['audit_s']:.0f} |")
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
