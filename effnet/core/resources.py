"""What this process may use: the CPUs it is bound to and the memory it can still take.

Under SLURM (cgroups, CPU binding) and containers these are smaller than the node's:
``os.cpu_count()`` and /proc/meminfo's total describe the machine, not the job.
"""
from __future__ import annotations

import os
from pathlib import Path

from effnet.core import cgroup


# Variables that carry the node-local rank, by launcher (Horovod, Open MPI, MPICH/Intel MPI, SLURM).
LOCAL_RANK_VARIABLES = ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")


def local_rank() -> int:
    """This process's rank on its node, as the launcher announced it (0 when launched alone): picks its GPU."""
    return next((int(os.environ[v]) for v in LOCAL_RANK_VARIABLES if v in os.environ), 0)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: the job's allocation under SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by its cgroups' limits; None if unknown."""
    left = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                left.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    limited = cgroup.memory_left()
    if limited is not None:
        left.append(limited)
    return min(left) if left else None


def default_workers(per_worker_bytes: int, limit: int | None = None) -> int:
    """Worker processes to start: one per available CPU, no more than memory holds, at least one."""
    workers = available_cpus()
    memory = available_memory()
    if memory is not None:
        workers = min(workers, memory // per_worker_bytes)
    if limit is not None:
        workers = min(workers, limit)
    return max(1, workers)
