"""Attempts that ended for memory, and the memory the next attempt asks for. Standard library only.

SLURM enforces a job's memory (``task/cgroup`` with ``ConstrainRAMSpace``, or ``OverMemoryKill``): past its
``mem_mb`` the kernel's OOM killer ends the stage. The launcher in the job (``effnet.cluster.job``) tells that from
other deaths: the stage killed (137; prepare ends with 137 when its worker was killed for memory twice) while the
cgroup it shares with the stage counted an OOM kill, or, for stages in srun steps of their own (ranks,
containers), SLURM's OUT_OF_MEMORY for a step of the job (sacct, where accounting answers); the ledger records it.
When Snakemake submits the next attempt the rule's ``mem_mb`` (``request_mb``) is the configured one doubled after
each attempt of the series that ended for memory (a crash the launcher did not see so counts when sacct or scontrol
says OUT_OF_MEMORY), capped by ``cluster.max_mem_mb`` and by the memory of the partition's smallest node where
sinfo answers. Any other ending keeps the memory as it is.
"""
from __future__ import annotations

import os
import subprocess

from effnet.core import cgroup
from effnet.core.errors import EXIT_NO_SPACE, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED, EXIT_USER_ERROR

OUT_OF_MEMORY = "OUT_OF_MEMORY"
MEMORY = "memory"  # a ledger entry's "ended" when its attempt ended for memory
QUERY_SECONDS = 30
NOT_MEMORY = (0, EXIT_PREEMPTED, EXIT_USER_ERROR, EXIT_NO_SPACE)  # endings of their own: never for memory


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
    """How the job side saw its stage end for memory (for the log), or None: killed (137) after the OOM killer
    counted a kill in this process's cgroup since ``kills_before`` (the stage's, or prepare's worker's), or any
    crash of a job SLURM says a step of ran out (ranks in srun steps: srun itself exits 1)."""
    if status in NOT_MEMORY:
        return None
    kills = cgroup.oom_kills()
    if status == EXIT_OUT_OF_MEMORY and None not in (kills, kills_before) and kills > kills_before:
        return f"{kills - kills_before} OOM kill(s) in the stage's cgroup"
    if job_id and slurm_says_out_of_memory(job_id):
        return f"SLURM recorded {OUT_OF_MEMORY} for a step of job {job_id}"
    return None


def ended_for_memory(entry: dict) -> bool:
    """Whether a ledger attempt ended for memory: as the job side recorded it, or, for a crash it did not see so
    (killed before it could record, or before accounting had the step's end), as SLURM remembers its job."""
    if entry.get("ended") == MEMORY:
        return True
    return (entry.get("status") not in NOT_MEMORY and bool(entry.get("job"))
            and bool(slurm_says_out_of_memory(entry["job"])))


def partition_memory_mb(partition: str | None) -> int | None:
    """The memory of the smallest node of ``partition`` (None: the default one) as sinfo reports it; None where
    sinfo does not answer (a dry run away from the cluster) or says something else."""
    sizes = []
    for line in (_query(["sinfo", "-h", "-o", "%P %m"]) or "").splitlines():
        try:
            name, memory = line.split()
            if name.rstrip("*") == partition or (partition is None and name.endswith("*")):
                sizes.append(int(memory.rstrip("+")))
        except ValueError:
            return None
    return min(sizes, default=None)


def request_mb(configured: int, ended: list[dict], cap: int | None, partition: str | None) -> int:
    """``mem_mb`` of the attempt after those that ``ended`` (``ledger.previous_attempts``): ``configured``,
    doubled for each that ended for memory, no more than ``cap`` and the partition's node memory."""
    times = sum(map(ended_for_memory, ended))
    if not times:
        return configured
    caps = [c for c in (cap, partition_memory_mb(partition)) if c]
    return max(configured, min([configured * 2 ** times, *caps]))
