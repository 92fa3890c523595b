"""Where a run's metrics go besides results.jsonl."""
from facecure.loggers.base import CSVRunLogger, RunLogger
from facecure.loggers.wandb_logger import WandbRunLogger

__all__ = ["CSVRunLogger", "RunLogger", "WandbRunLogger"]
