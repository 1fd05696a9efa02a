"""Stopping on SLURM's warning signals: installed before TensorFlow is imported, so a signal that
arrives while a rank starts up is kept, not fatal, and the rank checkpoints at its first step."""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopFlag:
    """Set by SIGTERM/SIGUSR1; a second signal while saving only sets it again."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._set)

    def _set(self, signum, frame) -> None:
        self.signal = signum
