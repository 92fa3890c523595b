"""`facecure-report <run or multirun folder>`: every results.jsonl below it -> report.md,
results.csv and figures shaped like the paper's."""
from facecure.report.build import build_report
from facecure.report.collect import collect

__all__ = ["build_report", "collect"]
