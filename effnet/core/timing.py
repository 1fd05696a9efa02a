"""How everything here is timed: wall seconds per call after a warm-up, summarised with true percentiles.

Shared by the benchmark stage, the evaluate stage and the comparisons with peers (``benchmarks.peers``), so
every figure in a report means the same thing. A timed call must return only when its result is on
the host (e.g. end in ``.numpy()``), or the clock measures the dispatch, not the work.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

PERCENTILES = (50, 90, 95, 99)
METHOD = ("wall time of each call, from its inputs being ready to its result on the host, after the warm-up "
          "calls; percentiles: numpy.percentile (linear interpolation) over the timed calls")


def time_calls(call: Callable[[], object], steps: int, warmup: int = 0) -> list[float]:
    """Run ``call`` ``warmup`` times untimed, then ``steps`` times; the seconds of each timed call."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def latency_ms(seconds: list[float]) -> dict:
    """Mean and true percentiles (p50/p90/p95/p99) of per-call seconds, in ms; None without calls."""
    if not seconds:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    ms = np.asarray(seconds) * 1000.0
    return {"mean": float(ms.mean()), **{f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES}}


def rate(seconds: list[float], items_per_call: int) -> float:
    """Items per second over the timed calls (items per call / mean seconds)."""
    return items_per_call * len(seconds) / sum(seconds) if seconds else float("nan")
