"""Run loggers: `logger=none|csv|wandb`. Results always go to results.jsonl as well."""
from __future__ import annotations

import csv
from pathlib import Path


class RunLogger:
    """`logger=none`: logs nothing beyond the run's own files."""

    def start(self, run_dir: Path, name: str, group: str, config: dict) -> None:
        self.run_dir = Path(run_dir)

    def log_metrics(self, metrics: dict) -> None:
        pass

    def log_table(self, name: str, rows: list[dict]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class CSVRunLogger(RunLogger):
    """`logger=csv`: metrics.csv and one CSV per table in the run folder."""

    def start(self, run_dir, name, group, config):
        super().start(run_dir, name, group, config)
        self._metrics: list[dict] = []

    def log_metrics(self, metrics: dict) -> None:
        self._metrics.append(metrics)
        _write_csv(self.run_dir / "metrics.csv", self._metrics)

    def log_table(self, name: str, rows: list[dict]) -> None:
        _write_csv(self.run_dir / f"{name}.csv", rows)


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
