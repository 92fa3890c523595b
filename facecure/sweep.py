"""Sweeps that survive their failures: a failed job leaves `error.txt` in its folder and the
others go on; at the end of the sweep a summary lists what finished, what was skipped and what
failed (and the command exits non-zero if anything failed)."""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from facecure.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not inside the Hydra app
        return False


def record_failure(run_dir: Path, error: BaseException) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    atomic_write_text(run_dir / "error.txt", text)
    log.error("job failed (%s: %s); traceback in %s", type(error).__name__, error,
              run_dir / "error.txt")


def sweep_status(sweep_dir: Path, since: float = 0.0) -> dict[str, list[str]]:
    """Job folders below a sweep folder (started after `since`) by state: finished or failed."""
    status: dict[str, list[str]] = {"finished": [], "failed": []}
    for config in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        if config.stat().st_mtime < since:  # a job of an earlier sweep into the same folder
            continue
        job = config.parent.parent
        if (job / "results.jsonl").exists():
            status["finished"].append(str(job.relative_to(sweep_dir)))
        else:  # an exception (error.txt) or a job that died hard (killed, out of memory)
            status["failed"].append(str(job.relative_to(sweep_dir)))
    return status


def failure_line(sweep_dir: Path, job: str) -> str:
    """`<job>: <last line of its error.txt>`, or that it died without a traceback."""
    error = sweep_dir / job / "error.txt"
    if not error.exists():
        return f"{job}: died without a traceback (killed, out of memory, or still running)"
    return f"{job}: " + (error.read_text().strip().splitlines() or ["?"])[-1]


class SweepSummary(Callback):
    """`hydra.callbacks.sweep_summary`: prints the sweep's outcome when every job has ended."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1
        # A rerun of a sweep reuses its folders: clear the old errors before the jobs run.
        for old in Path(config.hydra.sweep.dir).rglob("error.txt"):
            old.unlink()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        status = sweep_status(sweep_dir, getattr(self, "started", 0.0))
        print(f"sweep {sweep_dir}: {len(status['finished'])} jobs finished, "
              f"{len(status['failed'])} failed; report: facecure-report {sweep_dir}")
        if status["failed"]:
            lines = [failure_line(sweep_dir, job) for job in status["failed"]]
            atomic_write_text(sweep_dir / "failed_jobs.txt", "\n".join(lines) + "\n")
            print("failed jobs (details in each folder's error.txt):\n  " + "\n  ".join(lines))
            raise SystemExit(1)
