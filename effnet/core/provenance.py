"""Where a stage's outputs came from: recorded at the top of every stage's log.

The exact command, the code's git commit (and whether the checkout had uncommitted changes), a
hash of the configuration the command was given (``--config`` file and ``--set`` values), the
container image, the SLURM job and step, the host and the package version.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import effnet

# Set by effnet.cluster.job inside a Pyxis container; NGC images also name their own build.
CONTAINER_VARIABLES = ("EFFNET_CONTAINER_IMAGE", "NVIDIA_TENSORFLOW_VERSION", "NVIDIA_BUILD_ID")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=Path(effnet.__file__).parent, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def config_hash(config_path: str | None, overrides: list[str]) -> str | None:
    """sha256 of the config file's bytes and the ``--set`` values, in order; None without either."""
    if not config_path and not overrides:
        return None
    digest = hashlib.sha256()
    if config_path and Path(config_path).is_file():
        digest.update(Path(config_path).read_bytes())
    for item in overrides:
        digest.update(b"\0" + item.encode())
    return digest.hexdigest()


def record(argv: list[str], config_path: str | None = None, overrides: list[str] | None = None) -> dict:
    """The provenance of running ``python -m effnet ARGV``."""
    commit = _git("rev-parse", "HEAD")
    return {
        "command": shlex.join([sys.executable, "-m", "effnet", *argv]),
        "git_commit": commit,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "config_sha256": config_hash(config_path, overrides or []),
        "container": {v: os.environ[v] for v in CONTAINER_VARIABLES if v in os.environ} or None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_step_id": os.environ.get("SLURM_STEP_ID"),
        "host": socket.gethostname(), "effnet": effnet.__version__,
    }


def log(argv: list[str], config_path: str | None = None, overrides: list[str] | None = None) -> None:
    """Print ``record`` as one ``provenance {json}`` line on stderr (the stage's log under Snakemake)."""
    print("provenance " + json.dumps(record(argv, config_path, overrides)), file=sys.stderr, flush=True)
