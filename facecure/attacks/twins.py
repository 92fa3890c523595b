"""Matching a protection tool's output files to the original pictures they perturb.

Official tools name their outputs after the original: Fawkes writes `<stem>_<mode>_cloaked.png`
next to it, LowKey `<stem>_attacked.png`; a `mirror` folder repeats the data set's tree. Either
way the twin sits in a folder named after the identity, so a twin is keyed by (identity, stem).
Used by `attack=from_dir` on folders made elsewhere and by `attack=fawkes_cli` on its own runs.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecure.data.dataset import Picture
from facecure.data.images import IMAGE_SUFFIXES, load_picture
from facecure.utils.io import fingerprint

log = logging.getLogger(__name__)

NAMINGS = ("fawkes", "lowkey", "mirror")
ANY_MODE = ("any", "", None)


class MissingTwins(FileNotFoundError):
    """Requested originals without a perturbed twin in the tool's outputs."""


def name_list(names: Sequence[str], limit: int = 20) -> str:
    """'a, b, c' for at most `limit` names, then 'and N more'."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def original_stem(file_name: str, naming: str, mode: str | None = None) -> str | None:
    """Stem of the original picture a tool's output file perturbs; None: not an output."""
    path = Path(file_name)
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    if naming == "mirror":
        return path.stem
    if naming == "fawkes":
        mode_re = r"[A-Za-z0-9]+" if mode in ANY_MODE else re.escape(mode)
        found = re.fullmatch(rf"(.+)_{mode_re}_cloaked", path.stem)
    elif naming == "lowkey":
        found = re.fullmatch(r"(.+)_attacked", path.stem)
    else:
        raise ValueError(f"naming={naming!r}: expected auto or one of {', '.join(NAMINGS)}")
    return found.group(1) if found else None


def _key(picture: Picture) -> tuple[str, str]:
    return picture.identity, Path(picture.name).stem


@dataclass
class TwinIndex:
    """The tool's outputs under `root`, keyed by (identity folder, original stem)."""

    root: Path
    naming: str  # resolved: never "auto"
    mode: str | None
    twins: dict[tuple[str, str], Path]
    digest: str  # of every twin's name, size and mtime when scanned: new outputs, new fingerprint

    def describe(self) -> str:
        mode = "any" if self.mode in ANY_MODE else self.mode
        example = {"fawkes": f"<identity>/<stem>_{'<mode>' if mode == 'any' else mode}_cloaked.png",
                   "lowkey": "<identity>/<stem>_attacked.png",
                   "mirror": "<identity>/<stem>.<any picture suffix>"}[self.naming]
        return (f"naming={self.naming}" + (f", mode={mode}" if self.naming == "fawkes" else "")
                + f" (files like {example}) under {self.root}")

    def match(self, pictures: Sequence[Picture]) -> list[Path | None]:
        return [self.twins.get(_key(p)) for p in pictures]

    def missing(self, pictures: Sequence[Picture]) -> list[str]:
        """identity/name of each picture without a twin."""
        return [f"{p.identity}/{p.name}" for p, path in zip(pictures, self.match(pictures))
                if path is None]

    def report(self, pictures: Sequence[Picture]) -> dict:
        """Originals without a twin (identity/name), twins of no original (relative paths)."""
        wanted = {_key(p) for p in pictures}
        orphans = sorted(str(path.relative_to(self.root)) for key, path in self.twins.items()
                         if key not in wanted)
        missing = self.missing(pictures)
        return {"missing": missing, "orphans": orphans, "matched": len(pictures) - len(missing)}

    def load(self, pictures: Sequence[Picture], tool: str, hint: str = "") -> list[np.ndarray]:
        """The twins of exactly `pictures`, decoded; ONE error naming every original without."""
        missing = self.missing(pictures)
        if missing:
            raise MissingTwins(
                f"{tool}: {len(missing)} of the {len(pictures)} requested pictures have no "
                f"perturbed twin; looked for {self.describe()}.{hint} "
                f"Missing: {name_list(missing)}.")
        return [load_picture(path) for path in self.match(pictures)]


def scan(root: str | Path, naming: str = "auto", mode: str | None = None) -> TwinIndex:
    """Index the tool's outputs under `root`; `auto` picks the scheme the file names show
    (a folder with both Fawkes and LowKey outputs is an error: say which one)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: expected a protection tool's outputs, "
                                "one sub-folder per identity")
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if naming == "auto":
        shown = [n for n in ("fawkes", "lowkey")
                 if any(original_stem(p.name, n, mode) for p in files)]
        if len(shown) > 1:
            raise ValueError(f"{root} holds both Fawkes (*_cloaked) and LowKey (*_attacked) "
                             "outputs: set attack.naming=fawkes or attack.naming=lowkey")
        # No tool's names seen: a given Fawkes mode still says Fawkes (its error then says so).
        naming = shown[0] if shown else ("mirror" if mode in ANY_MODE else "fawkes")
        log.info("%s: reading %s-style file names", root, naming)
    twins: dict[tuple[str, str], list[Path]] = {}
    for path in files:
        stem = original_stem(path.name, naming, mode)
        if stem is not None:
            identity = path.parent.name if path.parent != root else ""
            twins.setdefault((identity, stem), []).append(path)
    clashes = [" vs ".join(str(p.relative_to(root)) for p in ps)
               for ps in twins.values() if len(ps) > 1]
    if clashes:
        hint = " (set attack.mode to one Fawkes mode)" if naming == "fawkes" else ""
        raise ValueError(f"{root}: several files claim the same original{hint}: "
                         f"{name_list(clashes)}")
    found = {key: ps[0] for key, ps in twins.items()}
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(found.values())]
    return TwinIndex(root, naming, mode, found, fingerprint(stats))
