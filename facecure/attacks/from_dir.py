"""`attack=from_dir`: pictures an official protection tool (Fawkes, LowKey, ...) produced elsewhere.

The tool ran on the data set's pictures (its own environment, its own GPU); this attack serves
its outputs to the run, matched to the originals by identity folder and file stem (see
`twins.py`). Pictures keep the tool's size; the perturbed store measures their budget.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facecure.attacks.base import ProvidedAttack
from facecure.attacks.twins import NAMINGS, TwinIndex, name_list, scan
from facecure.data.dataset import Picture

log = logging.getLogger(__name__)


class FromDir(ProvidedAttack):
    """Perturbed twins read from `root`.

    naming: auto (guessed from the file names) | fawkes (`<stem>_<mode>_cloaked.png`) |
    lowkey (`<stem>_attacked.png`) | mirror (`<identity>/<stem>.<any suffix>`).
    mode: the Fawkes mode in the file names (high, ...), or any.
    label: free text naming the tool and version, e.g. "fawkes v1.0 high (official)".
    """

    name = "from_dir"
    unkeyed = ("label",)  # free text; the files' digest keys the pictures
    image_size = None

    def __init__(self, root: str | None = None, naming: str = "auto", mode: str | None = "any",
                 label: str = ""):
        if naming != "auto" and naming not in NAMINGS:
            raise ValueError(f"attack.naming={naming!r}: expected auto, {', '.join(NAMINGS)}")
        # A wrong root fails now; a missing one only when used, so the config still composes.
        self.root = Path(root).expanduser().resolve() if root else None
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"attack.root={root!r} is not a folder: expected the "
                                    "protection tool's outputs, one sub-folder per identity")
        self.naming, self.mode, self.label = naming, mode, label
        self._index: TwinIndex | None = None

    @property
    def index(self) -> TwinIndex:
        """The outputs under root, scanned once."""
        if self._index is None:
            if self.root is None:
                raise ValueError("attack=from_dir needs attack.root=<folder holding the "
                                 "protection tool's outputs, one sub-folder per identity>")
            self._index = scan(self.root, self.naming, self.mode)
        return self._index

    def params(self) -> dict:
        # The digest of the outputs keys the store: re-made outputs are ingested again.
        return {**super().params(), "root": str(self.root), "naming": self.index.naming,
                "mode": self.mode, "files": self.index.digest}

    def report(self, pictures: Sequence[Picture]) -> dict:
        """{"missing": [identity/name], "orphans": [relative path], "matched": n} over
        `pictures` (the whole data set, for orphans to mean anything); warns about orphans."""
        found = self.index.report(pictures)
        if found["orphans"]:
            log.warning("%s: %d perturbed file(s) match no original picture (%s): %s",
                        self.name, len(found["orphans"]), self.index.describe(),
                        name_list(found["orphans"]))
        return found

    def provide(self, pictures: Sequence[Picture]) -> list[np.ndarray]:
        return self.index.load(pictures, f"attack={self.name}")

