"""``python -m effnet doctor``: check the installed stack before running anything.

Prints one line per component (version, and for Horovod the controllers and
collective libraries it was built with) and exits non-zero naming what is
missing and how to fix it. Run it first on a new machine or cluster.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import shutil
from dataclasses import dataclass
from typing import Callable

SETUP_HINT = "run ./setup.sh env (or use the NGC TensorFlow container, see Dockerfile)"
SLURM_COMMANDS = ("sbatch", "srun", "squeue", "sinfo", "scancel")


@dataclass
class Check:
    """The outcome of checking one component."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _import_check(name: str, module: str, describe: Callable[[object], str], fix: str) -> Check:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any failure to load is what doctor reports
        return Check(name, False, f"cannot import {module}: {type(exc).__name__}: {exc}", fix)
    return Check(name, True, describe(mod))


def check_tensorflow() -> Check:
    def describe(tf):
        import keras
        wheel = "tensorflow-cpu" if _version("tensorflow-cpu") != "?" else "tensorflow"
        return f"{tf.__version__} (keras {keras.__version__}, wheel {wheel})"
    return _import_check("tensorflow", "tensorflow", describe, SETUP_HINT)


def check_horovod() -> Check:
    def describe(hvd):
        built = {
            "gloo": hvd.gloo_built(), "mpi": hvd.mpi_built(), "nccl": hvd.nccl_built(),
            "cuda": hvd.cuda_built(),
        }
        flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in built.items())
        if not (built["gloo"] or built["mpi"]):
            raise RuntimeError("built without gloo and without MPI: no controller")
        return f"{_version('horovod')} ({flags})"
    try:
        return _import_check("horovod", "horovod.tensorflow", describe,
                             "rebuild Horovod against the installed TensorFlow: " + SETUP_HINT)
    except RuntimeError as exc:
        return Check("horovod", False, str(exc), "rebuild with HOROVOD_WITH_GLOO=1: " + SETUP_HINT)


def check_dali() -> Check:
    return _import_check("dali", "nvidia.dali", lambda m: m.__version__, SETUP_HINT)


def check_dali_tf_plugin() -> Check:
    return _import_check(
        "dali-tf-plugin", "nvidia.dali.plugin.tf",
        lambda m: _version("nvidia-dali-tf-plugin-cuda120"),
        "reinstall the plugin against this TensorFlow: pip install --no-cache-dir "
        "--no-build-isolation nvidia-dali-tf-plugin-cuda120 (or " + SETUP_HINT + ")")


def check_snakemake() -> Check:
    return _import_check("snakemake", "snakemake", lambda m: _version("snakemake"), SETUP_HINT)


def check_slurm_plugin() -> Check:
    return _import_check("snakemake-executor-plugin-slurm", "snakemake_executor_plugin_slurm",
                         lambda m: _version("snakemake-executor-plugin-slurm"), SETUP_HINT)


def check_python_deps() -> Check:
    modules = ["yaml", "jsonschema", "tqdm", "PIL", "tensorflow_datasets"]
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            missing.append(f"{module} ({type(exc).__name__}: {exc})")
    if missing:
        return Check("python deps", False, "cannot import " + ", ".join(missing), SETUP_HINT)
    return Check("python deps", True, ", ".join(modules))


def check_slurm(required: bool) -> Check:
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        return Check("slurm", False, "missing commands: " + " ".join(missing),
                     "run on a SLURM login node, or apt-get install slurm-client", required)
    return Check("slurm", True, "commands found: " + " ".join(SLURM_COMMANDS), required=required)


def check_gpus(required: bool) -> Check:
    try:
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
    except Exception as exc:
        return Check("gpus", False, f"cannot query: {exc}", SETUP_HINT, required)
    if not gpus:
        return Check("gpus", False, "none visible to TensorFlow (CPU mode)",
                     "on a GPU host install `tensorflow` (EFFNET_TF=tensorflow ./setup.sh env) "
                     "and check nvidia-smi / CUDA_VISIBLE_DEVICES", required)
    return Check("gpus", True, f"{len(gpus)}: " + ", ".join(g.name for g in gpus), required=required)


def run_checks(cluster: bool = False) -> list[Check]:
    """Run every check; SLURM and GPUs are required only when ``cluster`` is set."""
    return [
        check_tensorflow(), check_horovod(), check_dali(), check_dali_tf_plugin(),
        check_snakemake(), check_slurm_plugin(), check_python_deps(),
        check_slurm(required=cluster), check_gpus(required=cluster),
    ]


def main(args: argparse.Namespace) -> int:
    checks = run_checks(cluster=args.cluster)
    for c in checks:
        status = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"{status} {c.name:32s} {c.detail}")
    failed = [c for c in checks if c.required and not c.ok]
    for c in failed:
        print(f"\nmissing: {c.name}: {c.detail}\n  fix: {c.fix}")
    if failed:
        print(f"\ndoctor: {len(failed)} problem(s): " + ", ".join(c.name for c in failed))
        return 1
    print("\ndoctor: all required components present")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check the installed stack (TF, Horovod, DALI, Snakemake, SLURM, GPUs)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", action="store_true",
                        help="also require SLURM commands and at least one GPU (use on a cluster node)")
    parser.set_defaults(func=main)
