"""`facecure-extractors`: every extractor config with its role, date, weights and whether it can
serve as an attack surrogate. Builds nothing and loads no weights."""
from __future__ import annotations

import glob
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from facecure.extractors.registry import extractor_config, list_extractors

PATH_KEYS = ("weights", "weights_path", "checkpoint", "path", "model_path", "model_dir")


def weights_status(cfg: DictConfig) -> str:
    if cfg.get("info", {}).get("zoo"):
        cached = glob.glob(str(Path(cfg.cache_dir) / f"{cfg.name}-*.pt"))
        return "cached" if cached else "trains on first use"
    paths = [str(cfg[k]) for k in PATH_KEYS if isinstance(cfg.get(k), str)]
    if not paths:
        return "-"
    missing = [p for p in paths if not Path(p).exists()]
    return "present" if not missing else f"missing: {missing[0]}"


def describe() -> list[dict]:
    rows = []
    for name in list_extractors():
        cfg = extractor_config(name)
        info = cfg.get("info", {})
        rows.append({"name": name, "date": str(info.get("date", "?")), "role": info.get("role", ""),
                     "differentiable": bool(info.get("differentiable", True)),
                     "weights": weights_status(cfg)})
    return sorted(rows, key=lambda r: (r["date"], r["name"]))


def main() -> None:
    table = Table(title="FaceCure extractors (extractor=<name>), ordered by date")
    for col in ("name", "date", "role", "surrogate?", "weights"):
        table.add_column(col)
    for r in describe():
        table.add_row(r["name"], r["date"], r["role"], "yes" if r["differentiable"] else "no",
                      r["weights"])
    Console().print(table)


if __name__ == "__main__":
    main()
