"""Shared test helpers: run the package's command line as a user would."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Seconds after which a test takes a subprocess (or a wait for its progress) as hung. A hang guard, never a
# performance check: far above the slowest run measured under the full suite's load on 2 cores (the local demo
# DAG, 370-600 s; the SLURM DAG, 19-24 min), so a slow or shared machine never fails a test.
HANG_GUARD = 2700
# The tests run Snakemake in the clone side by side (pytest-xdist): they share its lock directory (.snakemake/locks),
# and two runs ending at once race to delete it (FileNotFoundError in Snakemake's unlock, after a DAG that
# succeeded). Each test's outputs are its own (under its tmp_path), so its runs go without the lock.
SIDE_BY_SIDE = "--nolock"
# The model of every test that trains to check a mechanism (resume, ranks, signals, stages): the family at its
# smallest (effnet.models.efficientnet.TEST_VARIANTS), which starts a run in half B0's time. What is B0's own
# (its table, parameters, keras.applications' layers) is tested on B0.
TEST_ARCH = "efficientnet-test"


def run_cli(*args: str, env: dict | None = None, check: bool = False, cwd: Path = REPO,
            timeout: float = HANG_GUARD) -> subprocess.CompletedProcess:
    """Run ``python -m effnet ARGS`` in a subprocess; return the completed process (text output)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "effnet", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"effnet {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def python_with_env(**variables: str) -> int:
    """The Python process (not the shell that started it) whose environment holds every one of ``variables``."""
    wanted = {f"{k}={v}".encode() for k, v in variables.items()}
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and "python" in os.readlink(proc / "exe")
                    and wanted <= set((proc / "environ").read_bytes().split(b"\0"))):
                return int(proc.name)
        except OSError:  # gone, or not ours
            continue
    raise LookupError(variables)


@pytest.fixture
def cli():
    return run_cli


@contextlib.contextmanager
def memory_limited(limit_mb: int):
    """A memory cgroup holding at most ``limit_mb`` (a job's, as SLURM's task/cgroup sets it) with a group inside
    (a task's); yields the ``preexec_fn`` that puts a subprocess in the inner one. Needs root and a writable
    memory controller (v1 or v2); fails naming why where there is none."""
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    base, limit_file = ((v1, "memory.limit_in_bytes") if (v1 / "memory.limit_in_bytes").exists()
                        else (v2, "memory.max"))
    job = base / f"effnet-test-{uuid.uuid4().hex[:8]}"
    try:
        (job / "task").mkdir(parents=True)
        (job / limit_file).write_text(str(limit_mb << 20))
    except OSError as exc:
        pytest.fail(f"a memory limit is set on a cgroup of its own, which needs root and a writable memory "
                    f"controller ({base}): {exc}")
    try:
        yield lambda: (job / "task" / "cgroup.procs").write_text(str(os.getpid()))
    finally:
        for group in (job / "task", job):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            for _ in range(50):  # the killed leave their group a moment later
                with contextlib.suppress(OSError):
                    group.rmdir()
                    break
                time.sleep(0.1)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than cores (capped by --maxprocesses), as the tests often wait on
    subprocesses, srun and Snakemake's status checks; PYTEST_XDIST_AUTO_NUM_WORKERS still decides."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


def pytest_collection_modifyitems(items):
    """Longest first (``slow(minutes=N)``): under xdist they start at once and the short tests fill the gaps."""
    def minutes(item) -> float:
        marker = item.get_closest_marker("slow")
        return marker.kwargs.get("minutes", 1) if marker else 0

    items.sort(key=minutes, reverse=True)  # stable: the rest keep their order


def pytest_terminal_summary(terminalreporter):
    """Which SLURM versions the cluster tests ran on (their ids end in the version: ``[24.11]``), and how."""
    outcomes: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            version = re.search(r"\[(\d+\.\d+)\]$", getattr(report, "nodeid", ""))
            if version and (report.when == "call" or outcome in ("skipped", "error")):
                counts = outcomes.setdefault(version.group(1), {})
                counts[outcome] = counts.get(outcome, 0) + 1
    if outcomes:
        terminalreporter.write_line("SLURM versions the cluster tests ran on: " + "; ".join(
            f"{version}: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
            for version, counts in sorted(outcomes.items())))
