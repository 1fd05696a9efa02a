"""What the benchmark stage leaves in its folder, read by the report (file names: ``effnet.core.layout``).

``train.json`` and ``inference.json`` hold one row per measured configuration with its raw per-step (per-batch)
seconds, the warm-up left out, the precisions skipped on this host and why, and the host's
``effnet.core.environment``; ``*.dllog.json`` beside them are the dllogger records the figures were parsed from.
Each JSON is written last and atomically.
"""
from __future__ import annotations

from pathlib import Path

from effnet.core import jsonfile, layout


def load(directory: str | Path, kind: str) -> dict:
    """The ``kind`` ("train" or "inference") results in ``directory``; UserError if absent or unreadable."""
    return jsonfile.read(Path(directory) / layout.BENCHMARK_RESULTS[kind],
                         f"no {kind} benchmark (run `python -m effnet benchmark {kind}`)")
