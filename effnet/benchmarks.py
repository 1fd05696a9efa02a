"""The benchmark stage's output directory, shared by the stage (writer) and the report (reader).

``DIR/train.json`` and ``DIR/inference.json`` hold one row per measured configuration with its raw
per-step (per-batch) seconds, the warm-up left out, the precisions skipped on this host and why,
and the host's ``effnet.environment``; ``*.dllog.json`` beside them are the dllogger records the
figures were parsed from. Each JSON is written last and atomically.
"""
from __future__ import annotations

from pathlib import Path

from effnet import jsonfile

TRAIN = "train.json"
INFERENCE = "inference.json"
KINDS = {"train": TRAIN, "inference": INFERENCE}


def load(directory: str | Path, kind: str) -> dict:
    """The ``kind`` ("train" or "inference") results in ``directory``; UserError if absent or unreadable."""
    return jsonfile.read(Path(directory) / KINDS[kind], f"no {kind} benchmark (run `python -m effnet benchmark {kind}`)")
