"""doctor reports the installed stack and names what is missing.

The expectations are read from what is installed here (a CPU machine, a GPU host, the NGC container),
never from one machine's versions.
"""
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import HANG_GUARD

from effnet.stages.doctor import SLURM_COMMANDS


@pytest.fixture(scope="module")
def installed_tf():
    """TensorFlow's and Keras's versions and the GPUs TensorFlow sees, from a fresh interpreter."""
    code = ("import json, keras, tensorflow as tf; print(json.dumps([tf.__version__, keras.__version__, "
            "[g.name for g in tf.config.list_physical_devices('GPU')]]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=HANG_GUARD)
    version, keras_version, gpus = json.loads(proc.stdout.splitlines()[-1])
    return {"version": version, "keras": keras_version, "gpus": gpus}


def doctor_lines(out: str) -> dict[str, str]:
    return {line.split()[1]: line for line in out.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")}


def test_doctor_passes_on_the_installed_stack(cli, installed_tf):
    proc = cli("doctor", check=True)
    out = proc.stdout
    assert "doctor: all required components present" in out
    lines = doctor_lines(out)
    assert lines["tensorflow"].split()[2] == installed_tf["version"]
    assert installed_tf["keras"].startswith("3.") and lines["tensorflow"].endswith(f", keras {installed_tf['keras']}")
    assert lines["horovod"].split()[2] == importlib.metadata.version("horovod")
    assert "gloo yes" in lines["horovod"]
    assert lines["dali"].split()[2] == importlib.metadata.version("nvidia-dali-cuda120")
    assert lines["dali-tf-plugin"].split()[2] == importlib.metadata.version("nvidia-dali-tf-plugin-cuda120")
    assert lines["snakemake"].split()[2] == importlib.metadata.version("snakemake")
    # GPUs are reported (ok with their count, warn without any) but not required outside --cluster.
    if installed_tf["gpus"]:
        assert lines["gpus"].startswith("ok  ") and f"{len(installed_tf['gpus'])}: " in lines["gpus"]
    else:
        assert lines["gpus"].startswith("warn") and "none visible" in lines["gpus"]


# package shadowed -> the check that must name it (one doctor run: each check stands on its own)
UNIMPORTABLE = {"horovod": "horovod", "nvidia": "dali", "snakemake_executor_plugin_slurm":
                "snakemake-executor-plugin-slurm", "jsonschema": "python deps"}


def test_doctor_fails_naming_each_unimportable_package(cli, tmp_path):
    for package in UNIMPORTABLE:
        shadow = tmp_path / package
        shadow.mkdir()
        (shadow / "__init__.py").write_text(f"raise ImportError('{package} blocked by the test')\n")
    proc = cli("doctor", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = proc.stdout.split("\nmissing: ")[1:]
    for package, check in UNIMPORTABLE.items():
        (problem,) = [p for p in problems if p.startswith(f"{check}:")]
        assert f"{package} blocked by the test" in problem and "\n  fix: " in problem, problem
    assert "ok   tensorflow" in proc.stdout and "ok   snakemake " in proc.stdout  # the rest still checked


def test_doctor_cluster_mode_requires_gpus_and_slurm(cli, installed_tf):
    proc = cli("doctor", "--cluster")
    lines = doctor_lines(proc.stdout)
    no_slurm = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if installed_tf["gpus"]:
        assert "missing: gpus:" not in proc.stdout and lines["gpus"].startswith("ok  ")
    else:
        assert "missing: gpus:" in proc.stdout and lines["gpus"].startswith("FAIL")
    if no_slurm:
        assert "missing: slurm: missing commands: " + " ".join(no_slurm) in proc.stdout
    else:
        assert "missing: slurm:" not in proc.stdout and lines["slurm"].startswith("ok  ")
    assert proc.returncode == (1 if no_slurm or not installed_tf["gpus"] else 0), proc.stdout


def fake_slurm(tmp_path, monkeypatch, help_text: str, mpi_types: str, gres: str) -> None:
    """srun and sinfo on PATH answering as a cluster would (the checks read only their output)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "srun").write_text(f'#!/bin/sh\nif [ "$1" = --mpi=list ]; then printf "{mpi_types}"; '
                                  f'else printf -- "{help_text}"; fi\n')
    (bin_dir / "sinfo").write_text(f'#!/bin/sh\nprintf "{gres}"\n')
    for tool in ("srun", "sinfo"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_cluster_checks_name_what_is_missing_and_the_fix(tmp_path, monkeypatch):
    from effnet.stages.doctor import cluster_checks

    cluster = {"container_image": "nvcr.io/nvidia/tensorflow:25.02-tf2-py3", "mpi": "pmix", "gpus_per_node": 8}
    fake_slurm(tmp_path, monkeypatch, "Usage: srun [OPTIONS...]\\n  --mpi=type\\n",
               "MPI plugin types are...\\n\\tnone\\n\\tpmi2\\n", "gpu:4(S:0-1)\\n(null)\\n")
    checks = {c.name: c for c in cluster_checks(cluster)}
    assert not checks["pyxis"].ok and "Pyxis is not installed" in checks["pyxis"].detail
    assert not checks["srun-mpi"].ok and "pmix not among srun --mpi=list: none, pmi2" in checks["srun-mpi"].detail
    assert not checks["gpus-per-node"].ok and "largest gres: 4" in checks["gpus-per-node"].detail
    assert checks["container-image"].ok
    assert all(c.fix for c in checks.values() if not c.ok)

    fake_slurm(tmp_path / "pyxis", monkeypatch, "  --container-image=[USER@][REGISTRY#]IMAGE[:TAG]\\n",
               "MPI plugin types are...\\n\\tnone\\n\\tpmix\\n\\tpmi2\\n", "gpu:a100:8(S:0-1)\\n")
    assert all(c.ok for c in cluster_checks(cluster))
    untagged = {c.name: c for c in cluster_checks({**cluster, "container_image": "nvcr.io/nvidia/tensorflow"})}
    assert not untagged["container-image"].ok and "not registry/name:tag" in untagged["container-image"].detail
    missing = {c.name: c for c in cluster_checks({**cluster, "container_image": str(tmp_path / "x.sqsh")})}
    assert not missing["container-image"].ok and "no such file" in missing["container-image"].detail


def test_train_step_runs_one_real_horovod_step(cli):
    proc = cli("doctor", "--train-step", check=True)
    line = doctor_lines(proc.stdout)["train"]
    updated, total = re.search(r"(\d+) of (\d+) variables updated", line).groups()
    assert line.startswith("ok  ") and updated == total and int(total) > 200


def test_a_legacy_keras_environment_is_named_with_its_fix(cli):
    proc = cli("doctor", env={"TF_USE_LEGACY_KERAS": "1"})
    assert proc.returncode == 1
    line = doctor_lines(proc.stdout)["tensorflow"]
    assert line.startswith("FAIL") and "Keras 3 is needed" in line
    assert "unset TF_USE_LEGACY_KERAS" in proc.stdout
