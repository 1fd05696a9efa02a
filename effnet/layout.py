"""Where each stage of a pipeline run writes under ``run_dir``: shared by the workflow's rules and the report.

Paths are relative to the run directory; ``paths(run_dir)`` gives them joined.
"""
from __future__ import annotations

from pathlib import Path

DEMO_IMAGES = "demo-images"
RECORDS = "tfrecords"
INDEX = "dali-index"
TRAIN = "train"
EVAL_METRICS = "evaluate/metrics.json"
EVAL_CONFUSION = "evaluate/confusion.png"
EXPORT = "export"
PREDICTIONS = "infer/predictions.csv"
BENCHMARK = "benchmark"
REPORT = "report"
LOGS = "logs"
# batch runs (effnet.sweeps): each run in RUNS/<name>/, the records of each data section in DATA/<key>/
RUNS = "runs"
DATA = "data"


def path(run_dir: str | Path, relative: str) -> Path:
    """``relative`` (one of this module's names) under ``run_dir``."""
    return Path(run_dir) / relative
