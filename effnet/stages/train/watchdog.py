"""Ending a rank that makes no progress: a hung rank (a dead file system, a stuck GPU, a stopped
process) leaves every other rank waiting in its next allreduce, and the job would hold its GPUs until
the time limit. Each rank beats at every step and evaluation batch; when no beat came for
``train.stall_timeout`` seconds the rank exits with EXIT_STALLED, and srun (a minute after a rank's
exit) or horovodrun ends the others, so the job fails within minutes and its retry resumes from the last
checkpoint. A thread does the watching: it runs while the main thread waits in a collective.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from effnet.core.errors import EXIT_STALLED


class Watchdog:
    """Exits the process when ``beat`` was not called for ``timeout`` seconds (None: never), counted from the
    first beat: start-up (imports, building, the first step's tracing and XLA compilation, minutes on a loaded
    machine) is not bounded here; with several ranks a rank that
    hangs in it leaves the others in their first collective, which gloo bounds (stall_timeout + 60 s)."""

    def __init__(self, timeout: float | None, rank: int = 0) -> None:
        self.timeout, self.rank = timeout, rank
        self._last: float | None = None
        self._resting = False
        self._done = threading.Event()

    def beat(self) -> None:
        """Record progress (the first beat starts the watching)."""
        first = self._last is None
        self._last = time.monotonic()
        self._resting = False
        if first and self.timeout:
            threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def rest(self) -> None:
        """Stop counting until the next beat: a new training stage builds its input pipeline and traces (and
        compiles) its step at a new size, unbounded as at start-up."""
        self._resting = True

    def beating(self, items: Iterable) -> Iterator:
        """``items``, beating at each one (an evaluation's batches)."""
        for item in items:
            self.beat()
            yield item

    def stop(self) -> None:
        """Stop watching (the loop is over)."""
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(min(self.timeout / 4, 10.0)):
            idle = time.monotonic() - self._last
            if idle > self.timeout and not self._resting:
                print(f"rank {self.rank}: no training progress for {idle:.0f} s (train.stall_timeout="
                      f"{self.timeout}): a rank is hung or gone; exiting with status {EXIT_STALLED}",
                      file=sys.stderr, flush=True)
                os._exit(EXIT_STALLED)
