"""setup.sh's checks before it installs anything, run as a user would, with stub system commands.

`./setup.sh system ACTION` stops after the system-package step, so nothing is built here.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG_GUARD, REPO

# Each stub records its name and arguments in $CALLS, then does what the test says.
STUB = '#!/bin/sh\necho "{name} $*" >> "$CALLS"\n{body}\n'
NO_SUDO = {"sudo": "exit 1", "apt-get": "exit 1"}  # no passwordless sudo; apt-get must never run


def run_setup(tmp_path: Path, *args: str, stubs: dict[str, str], uid: int = 1000,
              python: str = sys.executable) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``setup.sh ARGS`` as user ``uid`` with ``stubs`` first on PATH; return it and the stub calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {"id": f'[ "$1" = -u ] && echo {uid}', **stubs}
    for name, body in stubs.items():
        (bin_dir / name).write_text(STUB.format(name=name, body=body))
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": python, "CALLS": str(calls)}
    proc = subprocess.run([str(REPO / "setup.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return proc, [c for c in recorded if not c.startswith("id ")]


@pytest.mark.parametrize("version", ["3.9.18", "3.13.1"])
def test_setup_refuses_an_unsupported_python_naming_it(tmp_path, version):
    fake = tmp_path / f"python{version}"
    fake.write_text(f"#!/bin/sh\necho {version}\n")
    fake.chmod(0o755)
    proc, calls = run_setup(tmp_path, "env", stubs=NO_SUDO, python=str(fake))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{fake} is Python {version}" in proc.stderr
    assert "3.10, 3.11 or 3.12" in proc.stderr and "PYTHON=python3.11 ./setup.sh" in proc.stderr
    assert calls == []


def test_setup_names_a_python_that_is_not_there(tmp_path):
    proc, _ = run_setup(tmp_path, "env", stubs=NO_SUDO, python="python-that-does-not-exist")
    assert proc.returncode == 1
    assert "no Python interpreter 'python-that-does-not-exist'" in proc.stderr


def test_env_without_root_uses_the_g_plus_plus_on_path_and_never_calls_sudo_or_apt(tmp_path):
    # A cluster login node: g++ from a module, no root, no sudo.
    proc, calls = run_setup(tmp_path, "system", "env", stubs={"g++": "echo 'g++ (module) 13.2'", **NO_SUDO})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "build tools present" in proc.stdout
    assert [c for c in calls if not c.startswith("g++ ")] == []


def test_env_without_root_and_without_a_compiler_says_what_an_admin_must_install(tmp_path):
    proc, calls = run_setup(tmp_path, "system", "env", stubs={"g++": "exit 127", **NO_SUDO})
    assert proc.returncode == 1
    assert "missing g++" in proc.stderr and "no root or passwordless sudo" in proc.stderr
    assert "An admin can run: apt-get install g++" in proc.stderr
    assert not any(c.startswith("apt-get") for c in calls)


def test_test_action_leaves_a_site_slurm_alone_even_as_root(tmp_path):
    # sbatch on PATH that no Debian package owns: a site's SLURM; Debian's must not be installed over it.
    stubs = {"g++": "exit 0", "sbatch": "exit 0", "dpkg": "exit 1", "apt-get": "exit 1"}
    proc, calls = run_setup(tmp_path, "system", "test", stubs=stubs, uid=0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"site SLURM found ({tmp_path / 'bin' / 'sbatch'}): left alone" in proc.stdout
    assert "/usr/sbin/slurmctld" in proc.stdout
    assert "dpkg -S " + str(tmp_path / "bin" / "sbatch") in calls
    assert not any(c.startswith("apt-get") for c in calls)


def test_test_action_without_root_skips_the_test_slurm_with_a_note(tmp_path):
    # Debian's sbatch (dpkg owns it), SLURM packages not installed, no root and no sudo.
    stubs = {"g++": "exit 0", "sbatch": "exit 0", "dpkg": 'echo "slurm-client: $2"', "dpkg-query": "exit 1",
             **NO_SUDO}
    proc, calls = run_setup(tmp_path, "system", "test", stubs=stubs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no root or passwordless sudo, so munge slurmctld slurmd slurm-client libslurm-dev not installed" \
        in proc.stdout
    assert "SLURM tests will be skipped" in proc.stdout
    assert "sudo -n true" in calls
    assert not any(c.startswith("apt-get") for c in calls)


def test_test_action_as_root_installs_only_the_missing_test_slurm(tmp_path):
    stubs = {"g++": "exit 0", "sbatch": "exit 0", "dpkg": 'echo "slurm-client: $2"',
             "dpkg-query": '[ "$3" = munge ] && exit 1; echo "install ok installed"', "apt-get": "exit 0"}
    proc, calls = run_setup(tmp_path, "system", "test", stubs=stubs, uid=0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "apt-get update -qq" in calls
    assert "apt-get install -y -qq --no-install-recommends munge" in calls
