"""`attack=fawkes_cli`: the official Fawkes program, run as a subprocess where it is installed.

Fawkes is meant to be run by one user on a folder of their own pictures: it cloaks every
picture directly in the folder given by `-d` and writes `<stem>_<mode>_cloaked.png` next to it.
So each identity's pictures go into a temporary folder of its own, named after the identity,
under their own stems; its outputs are then matched back exactly as `attack=from_dir` does.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from facecure.attacks.base import ProvidedAttack
from facecure.attacks.twins import scan
from facecure.data.dataset import Picture

log = logging.getLogger(__name__)


class FawkesNotInstalled(FileNotFoundError):
    """The official `fawkes` program is not on PATH."""


def _tail(text: str | bytes | None, n_lines: int = 30) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-n_lines:])


class FawkesCLI(ProvidedAttack):
    """Runs `<program> -d <folder> --mode <mode> --batch-size <n> --format <format> <args...>`.

    label names the installed Fawkes (e.g. "fawkes v1.0"); it is part of the fingerprint, so
    outputs of different versions are stored apart. timeout: seconds per identity, or None.
    """

    name = "fawkes_cli"
    unkeyed = ("timeout",)  # how long to wait, not what comes out
    image_size = None

    def __init__(self, program: str = "fawkes", mode: str = "high", fawkes_batch_size: int = 1,
                 format: str = "png", args: Sequence[str] = (), label: str = "",
                 timeout: float | None = None):
        self.program, self.mode, self.fawkes_batch_size = program, mode, fawkes_batch_size
        self.format, self.args, self.label, self.timeout = format, list(args), label, timeout

    def params(self) -> dict:
        return {**super().params(), "program": self.program, "mode": self.mode,
                "fawkes_batch_size": self.fawkes_batch_size, "format": self.format,
                "args": self.args, "label": self.label}

    def executable(self) -> str:
        """The program's path, or one error saying how to install it."""
        found = shutil.which(self.program)
        if found is None:
            raise FawkesNotInstalled(
                f"attack=fawkes_cli: the official Fawkes tool is not installed ({self.program!r} "
                "is not an executable on PATH). Install it in a separate environment, since it "
                "pins the TensorFlow of its era (1.x for Fawkes 0.3, 2.x for Fawkes 1.0) and the "
                "Python those support: `python -m venv fawkes-env && fawkes-env/bin/pip install "
                "fawkes`; then put its `fawkes` on PATH or set "
                "attack.program=/path/to/fawkes-env/bin/fawkes. To use pictures Fawkes or LowKey "
                "produced elsewhere, use attack=from_dir attack.root=<folder of their outputs>.")
        return found

    def provide(self, pictures: Sequence[Picture]) -> list[np.ndarray]:
        program = self.executable()
        by_identity: dict[str, list[Picture]] = {}
        for p in pictures:
            by_identity.setdefault(p.identity, []).append(p)
        with tempfile.TemporaryDirectory(prefix="facecure-fawkes-") as tmp:
            for identity, mine in by_identity.items():
                folder = Path(tmp) / identity
                self._write(folder, mine)
                self._run(program, folder, identity)
            # Fawkes writes nothing for a picture in which it finds no face.
            return scan(tmp, "fawkes", self.mode).load(
                pictures, f"attack={self.name} ({program})",
                hint=" Fawkes skips pictures in which it detects no face.")

    @staticmethod
    def _write(folder: Path, pictures: Sequence[Picture]) -> None:
        """Lossless copies under the original stems, which Fawkes's output names keep."""
        folder.mkdir(parents=True)
        stems = {}
        for p in pictures:
            stem = Path(p.name).stem
            if stems.setdefault(stem, p.name) != p.name:
                raise ValueError(f"{p.identity}: {stems[stem]} and {p.name} share the stem "
                                 f"{stem!r}, so Fawkes's outputs could not be told apart")
            Image.fromarray(p.load()).save(folder / f"{stem}.png")

    def _run(self, program: str, folder: Path, identity: str) -> None:
        cmd = [program, "-d", str(folder), "--mode", self.mode, "--batch-size",
               str(self.fawkes_batch_size), "--format", self.format, *self.args]
        log.info("fawkes_cli: %s (%d pictures of %s)", " ".join(cmd),
                 len(list(folder.iterdir())), identity)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"attack=fawkes_cli: {program} ran past attack.timeout="
                               f"{self.timeout}s on {identity}'s pictures; last output:\n"
                               f"{_tail(err.stderr) or _tail(err.stdout)}") from err
        if proc.returncode != 0:
            raise RuntimeError(f"attack=fawkes_cli: `{' '.join(cmd)}` failed (exit "
                               f"{proc.returncode}) on {identity}'s pictures; end of its stderr:\n"
                               f"{_tail(proc.stderr) or _tail(proc.stdout)}")
        log.debug("fawkes output for %s:\n%s", identity, _tail(proc.stdout))
