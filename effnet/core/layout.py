"""The map of a run directory: every path a stage writes or reads under ``run_dir``, named once.

The workflow's rules, the stages, the formats' readers and the cluster code all take their paths from here.
Standard library only. A stage's folder names are relative to the run's root; the file names within a folder
are relative to that folder (a stage given ``--output DIR`` writes them into DIR wherever it is)::

    run_dir/                  one run; a batch's run is run_dir/runs/<name>/, its records run_dir/data/<key>/
      demo-images/            demo_data: train/ and val/ image folders
      tfrecords/              prepare: train-*, validation-* shards, labels.txt, prepare.dllog.json, manifest.json
      dali-index/             index: <shard>.idx for every shard, index.json
      train/                  train: config.yaml, train.dllog.json, tensorboard/, checkpoints/ckpt-<step>/
                              (state.npz, meta.json), model.keras, ema.keras, train_summary.json
      evaluate/               evaluate: metrics.json, metrics.dllog.json, confusion.png
      export/                 export: saved_model/, model.onnx, export.json
      infer/                  infer: predictions.csv
      benchmark/              benchmark: train.json, inference.json and their dllogger records
      report/                 report: report.md, report.html, the plots (a batch's: the runs compared)
      logs/                   every rule: <rule>.log, one <rule>.log.N per attempt, <rule>.attempts.jsonl
"""
from __future__ import annotations

from pathlib import Path

# the stages' folders under a run's root
DEMO_IMAGES = "demo-images"
RECORDS = "tfrecords"
INDEX = "dali-index"
TRAIN = "train"
EVALUATE = "evaluate"
EXPORT = "export"
INFER = "infer"
BENCHMARK = "benchmark"
REPORT = "report"
LOGS = "logs"
# a batch (effnet.core.batch_runs): each run in BATCH_RUNS/<name>/, each data section's records in BATCH_DATA/<key>/
BATCH_RUNS = "runs"
BATCH_DATA = "data"

# prepare: in RECORDS
RECORDS_MANIFEST = "manifest.json"  # written last
RECORDS_LABELS = "labels.txt"
PREPARE_LOG = "prepare.dllog.json"  # dllogger records, one run appended after another
# index: in INDEX
INDEX_SUFFIX = ".idx"  # <shard name>.idx
INDEX_SUMMARY = "index.json"  # written last
# train: in TRAIN
TRAIN_CONFIG = "config.yaml"  # the effective configuration
TRAIN_LOG = "train.dllog.json"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
RAW_MODEL = "model.keras"
EMA_MODEL = "ema.keras"
WEIGHTS = {"ema": EMA_MODEL, "raw": RAW_MODEL}
TRAIN_SUMMARY = "train_summary.json"  # written last: the run finished
TRAIN_LOCK = ".train.lock"
# checkpoints: in CHECKPOINTS
CHECKPOINT_PREFIX = "ckpt-"  # ckpt-<step, 9 digits>/
CHECKPOINT_STATE = "state.npz"
CHECKPOINT_META = "meta.json"
SUPERSEDED_PREFIX = "superseded-"  # superseded-<recipe>/: checkpoints of another recipe, set aside
# evaluate: in EVALUATE
EVAL_METRICS = "metrics.json"  # written last
EVAL_CONFUSION = "confusion.png"
# export: in EXPORT
SAVED_MODEL = "saved_model"
ONNX = "model.onnx"
EXPORT_MANIFEST = "export.json"
# infer: in INFER
PREDICTIONS = "predictions.csv"
# benchmark: in BENCHMARK
BENCHMARK_RESULTS = {"train": "train.json", "inference": "inference.json"}
# report: in REPORT
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
TRAINING_PLOT = "training.png"
LR_PLOT = "lr.png"
THROUGHPUT_PLOT = "throughput.png"
LATENCY_PLOT = "latency.png"
SCALING_PLOT = "scaling.png"
REPORT_PLOTS = (TRAINING_PLOT, LR_PLOT, THROUGHPUT_PLOT, LATENCY_PLOT, SCALING_PLOT)
RUNS_PLOT = "runs.png"  # a batch's report: every run's curves


def run_root(run_dir: str | Path, name: str = "") -> Path:
    """The root of run ``name`` of a batch (``run_dir/runs/<name>``); ``run_dir`` itself for a single run ("")."""
    return Path(run_dir) / BATCH_RUNS / name if name else Path(run_dir)


def data_root(run_dir: str | Path, key: str = "") -> Path:
    """Where a batch's data section ``key`` is prepared (``run_dir/data/<key>``); ``run_dir`` for a single run."""
    return Path(run_dir) / BATCH_DATA / key if key else Path(run_dir)


def rule_log(root: str | Path, rule: str) -> Path:
    """The log of ``rule``'s current attempt in a run's (or data section's) ``root``."""
    return Path(root) / LOGS / f"{rule}.log"


def attempts_ledger(root: str | Path, rule: str) -> Path:
    """``rule``'s attempts and how each ended (effnet.cluster.ledger), in a run's (or data section's) ``root``."""
    return Path(root) / LOGS / f"{rule}.attempts.jsonl"


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint after optimizer step ``step``."""
    return f"{CHECKPOINT_PREFIX}{step:09d}"


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` names a checkpoint folder (a temporary one never does)."""
    name = Path(path).name
    return name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit()


def init_from_file(path: str | Path) -> str:
    """The file that stands for ``train.init_from`` (the workflow tracks it: its change retrains): a weights
    file, a train folder's summary (written last) or a checkpoint's state."""
    path = Path(path)
    if is_checkpoint(path):
        return str(path / CHECKPOINT_STATE)
    if path.suffix == ".h5":
        return str(path)
    return str(path / TRAIN_SUMMARY)


def init_from_home(path: str | Path) -> Path:
    """The folder ``train.init_from`` reads within: a weights file's folder, or the train folder (a checkpoint's
    train folder holds the model its arrays fill)."""
    path = Path(path)
    if is_checkpoint(path):
        return path.parent.parent
    return path.parent if path.suffix == ".h5" else path
