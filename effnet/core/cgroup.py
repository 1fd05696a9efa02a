"""This process's memory cgroup, v1 or v2: the memory its limits leave, and the kills its OOM killer counted.

Under SLURM's task/cgroup (ConstrainRAMSpace) the job's limit sits on an ancestor of the task's group (v1:
``.../job_<id>/step_<n>/task_<i>``), so limits are read up the hierarchy. The kernel counts an OOM kill in the
victim's own group (v1 ``memory.oom_control``, v2 ``memory.events``): a parent that wants to know whether its
child was killed for memory compares the count of the group they share before and after. Standard library only.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 62  # v1 writes "no limit" as a page-rounded 2**63 - 1


def memory_groups(proc: Path = Path("/proc/self/cgroup"), root: Path = ROOT) -> list[Path]:
    """This process's memory cgroup directory and its ancestors up to the hierarchy's root as mounted, innermost
    first ([] if none)."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = root / "memory"
            break
    else:  # v2: the one unified hierarchy
        relative = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
        base = root
        if relative is None or not (root / "cgroup.controllers").exists():
            return []
    parts = [p for p in relative.split("/") if p]  # none in a container's own cgroup namespace: its group is the base
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1) if base.joinpath(*parts[:n]).is_dir()]


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # absent, or "max" (no limit)
        return None


def _limits(groups: list[Path] | None) -> list[tuple[int, int]]:
    """(limit, usage) in bytes of each of this process's groups that sets a limit."""
    found = []
    for group in memory_groups() if groups is None else groups:
        for limit_file, usage_file in (("memory.max", "memory.current"), ("memory.limit_in_bytes",
                                                                           "memory.usage_in_bytes")):
            limit, usage = _read_int(group / limit_file), _read_int(group / usage_file)
            if limit is not None and usage is not None and limit < UNLIMITED:
                found.append((limit, usage))
    return found


def memory_limit(groups: list[Path] | None = None) -> int | None:
    """Bytes the tightest limit of this process's groups allows in all (a SLURM job's --mem); None where none."""
    return min((limit for limit, _ in _limits(groups)), default=None)


def memory_left(groups: list[Path] | None = None) -> int | None:
    """Bytes the tightest limit of this process's groups still allows; None where none is set."""
    return min((limit - usage for limit, usage in _limits(groups)), default=None)


def oom_kills(groups: list[Path] | None = None) -> int | None:
    """OOM kills counted in this process's own memory group so far; None where the kernel does not say."""
    groups = memory_groups() if groups is None else groups
    for name in ("memory.events", "memory.oom_control"):
        try:
            lines = (groups[0] / name).read_text().splitlines()
        except (OSError, IndexError):
            continue
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return None
