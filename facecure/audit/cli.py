"""`facecure audit`: do my protected photos still protect me? Checked on this machine only.

    facecure audit --posted my_posted/ --probe camera_stills/ [--clean originals/] [--out DIR]
"""
from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from facecure.audit.photos import SCRAPES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facecure audit", description=__doc__.split("\n")[0])
    p.add_argument("--posted", required=True, help="the photos you published (protected)")
    p.add_argument("--probe", required=True, help="other photos of you (e.g. a camera still)")
    p.add_argument("--clean", help="the unprotected originals of the posted photos (same names)")
    p.add_argument("--distractors", help="a folder of identity sub-folders to search among "
                   "(default: the real world's data folder, ../shared/faces/celeba150)")
    p.add_argument("--exclude", action="append", default=[], metavar="IDENTITY",
                   help="a distractor identity folder to leave out (e.g. yourself); repeatable")
    p.add_argument("--models", help="comma-separated real models (default: the real world's "
                   "eras: dlib, mobileface, faceres, faceres_deep)")
    p.add_argument("--scrapes", default=",".join(SCRAPES),
                   help=f"what platforms do before a scraper gets the photo ({', '.join(SCRAPES)})")
    p.add_argument("--adaptive", nargs="?", const="", metavar="SWEEP",
                   help="also the adaptive trainer: the robust models and detectors that the real "
                   "world's adaptive and detection experiments stored (default sweep: multirun/real)")
    p.add_argument("--out", help="the report folder (default: outputs/audit/<date-time>)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (paths.cache_dir=..., align...)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[2:] if argv is None else argv
    args = parser().parse_args(argv)
    from facecure.audit.report import write_report
    from facecure.audit.run import AuditInput, run_audit
    from facecure.paths import PROJECT_ROOT

    out = Path(args.out) if args.out else PROJECT_ROOT / "outputs" / "audit" / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S")
    inp = AuditInput(args.posted, args.probe, args.clean, args.distractors, args.exclude,
                     args.models.split(",") if args.models else None,
                     [s.strip() for s in args.scrapes.split(",") if s.strip()], args.overrides,
                     args.device, not args.no_progress, args.adaptive)
    try:
        result = run_audit(inp)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"facecure audit: {err}", file=sys.stderr)
        return 2
    report = write_report(result, out, "facecure audit " + shlex.join(argv))
    print(report.read_text().split("## The numbers")[0].strip())
    print(f"\nreport: {report} (verdict.json, verdict.png beside it); nothing left this machine")
    return 0
