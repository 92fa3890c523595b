"""The results table printed at the end of a run."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def detector_table(detectors: list[dict]) -> Table:
    table = Table(title="Perturbation detector on held-out users (train attack -> test attack)")
    for col in ("train attack", "test attack", "accuracy", "precision", "recall", "AUC", "init"):
        table.add_column(col, justify="left" if "attack" in col or col == "init" else "right")
    for d in detectors:
        table.add_row(d["train_attack"], d["test_attack"], _pct(d["accuracy"]), _pct(d["precision"]),
                      _pct(d["recall"]), f"{d['auc']:.3f}", str(d.get("init", "-")))
    return table


def print_results(aggregates: list[dict], run_dir: Path, synthetic: bool,
                  detectors: list[dict] = ()) -> None:
    table = Table(title="Protection rate over attacker users (the trainer's top-1 error on their "
                        "unperturbed test pictures: 1-NN, or the classifier a defense trains)" + (" - SYNTHETIC faces" if synthetic else ""))
    for col in ("attack", "extractor", "defense", "protection rate", "± 95% CI", "std",
                "clean acc. (others)", "attackers", "max DSSIM", "max L∞"):
        table.add_column(col, justify="right" if col[0] in "p±scamM" and col != "attack" else "left")
    for a in aggregates:
        mode = f" ({a['attack_mode']})" if a.get("attack_mode") else ""
        defense = a["defense"] + "".join(f" {a[k]}" for k in ("system", "classifier") if a.get(k))
        table.add_row(a["attack"] + mode, a["extractor"], defense,
                      _pct(a["protection_rate_mean"]), _pct(a["protection_rate_ci95"]),
                      _pct(a["protection_rate_std"]), _pct(a["clean_accuracy"]),
                      str(a["n_attackers"]),
                      "-" if a["dssim_max"] is None else f"{a['dssim_max']:.4f}",
                      "-" if a["linf_max"] is None else f"{a['linf_max'] * 255:.1f}/255")
    console = Console()
    if not console.is_terminal:  # a log file: do not fold the table into 80 columns
        console = Console(width=160)
    if aggregates or not detectors:
        console.print(table)
    if detectors:
        console.print(detector_table(detectors))
    console.print(f"outputs: {run_dir}  (results.jsonl, config.yaml)")
