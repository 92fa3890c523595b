"""Gather the records of every run below a folder (a run, a multirun sweep, or many sweeps)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from facecure.extractors.registry import extractor_config, list_extractors
from facecure.worlds import record_world

log = logging.getLogger(__name__)


@dataclass
class Collected:
    aggregates: list[dict] = field(default_factory=list)
    attackers: list[dict] = field(default_factory=list)
    detectors: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)  # robust recipes on held-out public users
    runs: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # lines or files that did not parse

    def in_world(self, world: str) -> Collected:
        """Only the records of one world (records older than worlds are embedded ones)."""
        def keep(records):
            return [r for r in records if record_world(r) == world]
        return Collected(keep(self.aggregates), keep(self.attackers), keep(self.detectors),
                         keep(self.validations), keep(self.runs), self.unreadable)

    @property
    def worlds(self) -> list[str]:
        return sorted({record_world(r) for r in self.runs + self.attackers + self.detectors + self.validations})

    @property
    def synthetic(self) -> bool:
        return any(r.get("synthetic") for r in self.runs + self.aggregates + self.detectors)


def collect(root: str | Path) -> Collected:
    """Every record below `root`; each record gets `run_dir` (relative to `root`)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    out = Collected()
    files = [root] if root.is_file() else sorted(root.rglob("results.jsonl"))
    for path in files:
        run_dir = str(path.parent.relative_to(root)) if path != root else "."
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = {**json.loads(line), "run_dir": run_dir}
            except json.JSONDecodeError:  # a run killed while writing its last line
                out.unreadable.append(f"{path}:{n}")
                continue
            kind = record.get("kind")
            {"aggregate": out.aggregates, "attacker": out.attackers, "detector": out.detectors,
             "validation": out.validations, "run": out.runs}.get(kind, []).append(record)
    return out


def extractor_date(name: str) -> str:
    """An extractor's era (YYYY-MM) from its config; derived models (`x+robust`) take x's."""
    base = name.split("+")[0]
    if base in list_extractors():
        return str(extractor_config(base).get("info", {}).get("date", "9999"))
    return "9999"
