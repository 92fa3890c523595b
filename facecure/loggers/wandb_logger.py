"""`logger=wandb`: offline by default, so a compute node without internet never hangs.

It logs numbers and tables, never a picture: face pictures are biometric data.
"""
from __future__ import annotations

import os

from facecure.loggers.base import RunLogger


class WandbRunLogger(RunLogger):
    def __init__(self, project: str = "facecure", entity: str | None = None, mode: str = "offline",
                 tags: list[str] | None = None):
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, not {mode!r}")
        self.project, self.entity, self.mode = project, entity, mode
        self.tags = list(tags or [])
        self.run = None

    def start(self, run_dir, name, group, config):
        super().start(run_dir, name, group, config)
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode,
                              dir=str(self.run_dir), name=name, group=group, config=config,
                              tags=self.tags, reinit="finish_previous",
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def log_metrics(self, metrics: dict) -> None:
        self.run.log(metrics)

    def log_table(self, name: str, rows: list[dict]) -> None:
        import wandb

        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            data = [[_plain(row.get(c)) for c in columns] for row in rows]
            self.run.log({name: wandb.Table(columns=columns, data=data)})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _plain(value):
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
