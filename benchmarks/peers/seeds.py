"""Accuracy comparisons over seeds: our train stage as a whole process, and every run's figures with each side's
mean and standard deviation."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def timed(command: list[str]) -> tuple[str, float]:
    """The standard output and wall seconds of a whole process, which must succeed."""
    start = time.perf_counter()
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return out, time.perf_counter() - start


def train_ours(config: str | Path, data: Path, output: Path, sets: list[str]) -> tuple[float, float]:
    """Validation top-1 and whole-process wall seconds of ``python -m effnet train --config config`` + ``sets``
    on records ``prepared`` made (with their DALI index)."""
    _, wall = timed([sys.executable, "-m", "effnet", "train", "--config", str(config), "--data", str(data),
                     "--index", str(index_of(data)), "--output", str(output),
                     *(a for s in sets for a in ("--set", s))])
    from effnet.formats import trained_run

    return trained_run.load_summary(output)["eval"]["top1"], wall


def index_of(records: Path) -> Path:
    """Where ``prepared`` keeps the DALI index of ``records`` (one per data set: shard names repeat)."""
    return records.with_name(f"{records.name}-index")


def prepared(work: Path, name: str, write: Callable[[Path], None]) -> Path:
    """``work/<name>-rec``: the records of the folders ``write`` makes at ``work/<name>``, prepared and indexed
    once."""
    from effnet.core import layout
    from effnet.stages.index import build_indexes
    from effnet.stages.prepare import prepare

    records = work / f"{name}-rec"
    if not (records / layout.RECORDS_MANIFEST).exists():
        write(work / name)
        prepare("folders", str(work / name), str(records), train_shards=2, val_shards=1, workers=1)
    if not (index_of(records) / layout.INDEX_SUMMARY).exists():
        build_indexes(records, index_of(records))
    return records


def compare(seeds: list[int], sides: dict[str, Callable[[int], tuple[float, float]]], title: str) -> None:
    """Run every side (seed -> top-1, wall seconds) once per seed, printing each run, then per side the mean and
    standard deviation of top-1 and wall time under ``title``."""
    width = max(map(len, sides))
    results = {side: [] for side in sides}
    for seed in seeds:
        for side, run in sides.items():
            results[side].append(run(seed))
            print(f"seed {seed}  {side:{width}s}  top-1 {results[side][-1][0]:.3f}  wall {results[side][-1][1]:6.1f} s",
                  flush=True)
    print(f"\n{title}, seeds {seeds}:")
    for side, runs in results.items():
        top1, wall = np.array(runs).T
        sd = (lambda a: a.std(ddof=1) if len(a) > 1 else 0.0)
        print(f"  {side:{width}s}  top-1 {top1.mean():.3f} +- {sd(top1):.3f}   wall {wall.mean():6.1f} +- "
              f"{sd(wall):5.1f} s   runs: {', '.join(f'{t:.3f}' for t in top1)}")
