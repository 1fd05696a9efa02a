"""One trainer per run directory. Two trainers on one checkpoint directory (a second Snakemake started
elsewhere, ``--unlock`` while the old job runs, SLURM requeueing a job that Snakemake also resubmitted)
would overwrite each other's checkpoints; rank 0 holds an exclusive lock on the run directory for as long
as it trains, and a second trainer stops at once, naming the holder. The kernel releases the lock when its
process dies, so a killed job never leaves a stale one.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
import warnings
from pathlib import Path
from typing import IO

from effnet.core import layout
from effnet.core.errors import UserError


def hold(directory: Path) -> IO:
    """Lock ``directory`` for this process (until the returned file is closed or the process ends)."""
    path = directory / layout.TRAIN_LOCK
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):  # ENOLCK, EOPNOTSUPP: a file system without locks
            warnings.warn(f"{path}: cannot lock ({e.strerror}); nothing stops a second trainer on this run "
                          "directory", stacklevel=2)
            return f
        f.seek(0)
        holder = f.read().strip() or "a process that wrote nothing yet"
        f.close()
        raise UserError(f"{directory}: another trainer is training here ({holder}); two would overwrite each "
                        "other's checkpoints. Wait for it or stop it, or train into another run directory") from None
    f.seek(0)
    f.truncate()
    job = os.environ.get("SLURM_JOB_ID")
    f.write(f"host {socket.gethostname()} pid {os.getpid()}{f' SLURM job {job}' if job else ''} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f
