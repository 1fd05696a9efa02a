"""Attempts that ended for memory, and the memory the next attempt asks for. Standard library only.

SLURM enforces a job's memory (``task/cgroup`` with ``ConstrainRAMSpace``, or ``OverMemoryKill``): past its
``mem_mb`` the kernel's OOM killer ends the stage. The launcher in the job (``effnet.cluster.job``) tells that from
other deaths by the OOM kills counted in the cgroup it shares with the stage, and for stages in srun steps of their
own (ranks, containers) by SLURM's OUT_OF_MEMORY for a step of the job (sacct, where accounting answers); the
ledger records it. When Snakemake submits the next attempt the rule's ``mem_mb`` (``request_mb``) is the configured
one doubled after each attempt of the series that ended for memory (an attempt killed before it could record counts
when sacct or scontrol says OUT_OF_MEMORY), capped by ``cluster.max_mem_mb`` and by the memory of the partition's
nodes where sinfo answers. Any other ending keeps the memory as it is.
"""
from __future__ import annotations

import os
import subprocess

from effnet.core import cgroup
from effnet.core.errors import EXIT_PREEMPTED

OUT_OF_MEMORY = "OUT_OF_MEMORY"
MEMORY = "memory"  # a ledger entry's "ended" when its attempt ended for memory
QUERY_SECONDS = 30


def _query(command: list[str]) -> str | None:
    """A SLURM command's output, or None where it does not answer (not installed, no accounting, hung)."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def slurm_says_out_of_memory(job_id: str) -> bool | None:
    """Whether SLURM recorded OUT_OF_MEMORY for the job or one of its steps: sacct where accounting answers, else
    scontrol while it remembers the job (MinJobAge); None where neither knows the job."""
    states = _query(["sacct", "-j", str(job_id), "-n", "-P", "-o", "State"])
    if states and states.strip():
        return any(line.split()[0] == OUT_OF_MEMORY for line in states.splitlines() if line.strip())
    job = _query(["scontrol", "-o", "show", "job", str(job_id)])
    return f"JobState={OUT_OF_MEMORY}" in job if job else None


def job_memory_mb(environ=os.environ) -> int | None:
    """The memory per node of the SLURM job this process runs in (sbatch --mem; the limit of its cgroup where
    Snakemake's job-side helper has dropped SLURM's variables), if it has one."""
    value = environ.get("SLURM_MEM_PER_NODE")
    if value and value.isdigit():
        return int(value)
    limit = cgroup.memory_limit()
    return limit >> 20 if limit else None


def seen_here(status: int, kills_before: int | None, job_id: str | None) -> str | None:
    """How the job side saw its stage end for memory (for the log), or None: a failure after the OOM killer
    counted a kill in this process's cgroup since ``kills_before``, or a step of the job SLURM says ran out."""
    if status in (0, EXIT_PREEMPTED):
        return None
    kills = cgroup.oom_kills()
    if None not in (kills, kills_before) and kills > kills_before:
        return f"{kills - kills_before} OOM kill(s) in the job's cgroup"
    if job_id and slurm_says_out_of_memory(job_id):
        return f"SLURM recorded {OUT_OF_MEMORY} for a step of job {job_id}"
    return None


def ended_for_memory(entry: dict) -> bool:
    """Whether a ledger attempt ended for memory: as the job side recorded it, or, for an attempt killed before it
    could record its end, as SLURM remembers its job."""
    if entry.get("ended") == MEMORY:
        return True
    return "status" not in entry and bool(entry.get("job")) and bool(slurm_says_out_of_memory(entry["job"]))


def partition_memory_mb(partition: str | None) -> int | None:
    """The memory of the smallest node of ``partition`` (None: the default one) as sinfo reports it; None where
    sinfo does not answer (a dry run away from the cluster)."""
    lines = _query(["sinfo", "-h", "-o", "%P %m"])
    for line in (lines or "").splitlines():
        name, memory = line.split()
        if name.rstrip("*") == partition or (partition is None and name.endswith("*")):
            return int(memory.rstrip("+"))
    return None


def request_mb(configured: int, ended: list[dict], cap: int | None, partition: str | None) -> int:
    """``mem_mb`` of the attempt after those that ``ended`` (``ledger.previous_attempts``): ``configured``,
    doubled for each that ended for memory, no more than ``cap`` and the partition's node memory."""
    times = sum(map(ended_for_memory, ended))
    if not times:
        return configured
    caps = [c for c in (cap, partition_memory_mb(partition)) if c]
    return max(configured, min([configured * 2 ** times, *caps]))
