"""What a measurement ran on: CPU, GPUs and driver, library versions, container image.

Recorded by the benchmark stage beside its figures, so a report (written anywhere, later) can say
which hardware and software the figures belong to and whether published ones are comparable.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from effnet.core.provenance import CONTAINER_VARIABLES

TENSORFLOW_WHEELS = ("tensorflow", "tensorflow-cpu")  # one `tensorflow` package, built with CUDA or without
DISTRIBUTIONS = ("keras", "horovod", "nvidia-dali-cuda120", "nvidia-dali-tf-plugin-cuda120", "numpy")


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (platform.processor() where /proc/cpuinfo has none)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpus() -> list[dict]:
    """name, memory (MiB) and driver of each GPU nvidia-smi lists; [] without GPUs or nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    rows = [[f.strip() for f in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]
    return [{"name": n, "memory_mib": int(m) if m.isdigit() else None, "driver": d} for n, m, d in rows]


def installed(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorflow_wheel() -> str | None:
    """The TensorFlow that ``import tensorflow`` loads, with the wheel it came from: '2.18.1 (tensorflow-cpu)'."""
    return ", ".join(f"{version} ({d})" for d in TENSORFLOW_WHEELS if (version := installed(d))) or None


def versions() -> dict:
    """Installed versions of Python and the stack (None where absent)."""
    return {"python": sys.version.split()[0], "tensorflow": tensorflow_wheel(),
            **{dist: installed(dist) for dist in DISTRIBUTIONS}}


def describe() -> dict:
    """This host's CPU, GPUs, versions and container (as ``provenance`` sees it)."""
    return {
        "host": platform.node(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpus": gpus(), "versions": versions(),
        "container": {v: os.environ[v] for v in CONTAINER_VARIABLES if v in os.environ} or None,
    }
