"""``python -m effnet doctor``: check the installed stack before running anything.

Prints one line per component (version, and for Horovod the controllers and
collective libraries it was built with) and exits non-zero naming what is
missing and how to fix it. Run it first on a new machine or cluster.
"""
from __future__ import annotations

import argparse
import importlib
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from effnet.core.config import DEFAULT_CONFIG
from effnet.core.environment import installed, tensorflow_wheel

SETUP_HINT = "run ./setup.sh env (or use the production image, see Dockerfile)"
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
    return installed(dist) or "?"


def _import_check(name: str, module: str, describe: Callable[[object], str], fix: str) -> Check:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any failure to load is what doctor reports
        return Check(name, False, f"cannot import {module}: {type(exc).__name__}: {exc}", fix)
    return Check(name, True, describe(mod))


def check_tensorflow() -> Check:
    def describe(tf):
        import keras
        return f"{tensorflow_wheel() or tf.__version__ + ' (no wheel metadata)'}, keras {keras.__version__}"
    found = _import_check("tensorflow", "tensorflow", describe, SETUP_HINT)
    if found.ok:
        import keras
        import tensorflow as tf

        try:
            tf_keras = tf.keras.__name__
        except Exception as exc:  # TF_USE_LEGACY_KERAS=1 without tf_keras installed fails here
            tf_keras = f"unimportable ({type(exc).__name__})"
        if not keras.__version__.startswith("3.") or not tf_keras.startswith("keras"):
            return Check("tensorflow", False, f"{found.detail}: tf.keras is {tf_keras}, Keras 3 is needed",
                         "unset TF_USE_LEGACY_KERAS (some images set it to 1) and install keras 3 "
                         "(pip install -c requirements/constraints.txt keras)")
    return found


def check_train_step() -> Check:
    """One real training step: B0 built at 32 px, Horovod's tape averaging gradients of the Keras 3
    variables, the optimizer applying them (what the Dockerfile's last build step runs)."""
    try:
        import horovod.tensorflow as hvd
        import keras
        import numpy as np
        import tensorflow as tf

        from effnet.core import ranks
        from effnet.models import build_model

        ranks.init()
        model = build_model("efficientnet-b0", num_classes=10, image_size=32)
        optimizer = keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1e-3)
        images = tf.random.uniform([4, 32, 32, 3], 0, 255, seed=0)
        labels = tf.constant([0, 1, 2, 3])
        before = [np.array(v) for v in model.trainable_variables]
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(labels, model(images, training=True), from_logits=True)
            loss = tf.reduce_mean(loss)
        grads = hvd.DistributedGradientTape(tape).gradient(loss, [v.value for v in model.trainable_variables])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        moved = sum(not np.array_equal(b, np.array(v)) for b, v in zip(before, model.trainable_variables))
    except Exception as exc:  # any failure of the step is what this check reports
        return Check("train step", False, f"{type(exc).__name__}: {exc}", SETUP_HINT)
    if not np.isfinite(float(loss)) or moved == 0:
        return Check("train step", False, f"loss {float(loss)}, {moved} variables updated", SETUP_HINT)
    return Check("train step", True, f"B0 at 32 px: loss {float(loss):.3f}, {moved} of {len(before)} variables updated")


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
                     "run on the cluster's login node (or `module load slurm`); on a Debian workstation "
                     "apt-get install slurm-client", required)
    return Check("slurm", True, "commands found: " + " ".join(SLURM_COMMANDS), required=required)


def _output(*command: str) -> str | None:
    """stdout+stderr of ``command``, None when it cannot run."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout + proc.stderr


def check_pyxis(image: str | None) -> Check:
    """Pyxis's options in ``srun --help`` when stages run in a container."""
    if not image:
        return Check("pyxis", True, "not needed (cluster.container_image is null)")
    help_text = _output("srun", "--help") or ""
    if "--container-image" not in help_text:
        return Check("pyxis", False, "srun --help lists no --container-image: Pyxis is not installed",
                     "ask the admins for Pyxis + enroot on the compute nodes, or set cluster.container_image: null "
                     "and use ./setup.sh env on the nodes")
    return Check("pyxis", True, "srun knows --container-image, --container-mounts")


def check_mpi(kind: str) -> Check:
    """The configured ``srun --mpi`` type among ``srun --mpi=list``'s."""
    if kind == "none":
        return Check("srun-mpi", True, "none (gloo rendezvous started by the job)")
    listed = _output("srun", "--mpi=list") or ""
    types = sorted(set(re.findall(r"\b(pmix(?:_v\d+)?|pmi2|cray_shasta|none)\b", listed)))
    if kind not in types:
        found = ", ".join(types) or "nothing (" + (listed.strip().splitlines() or ["srun did not run"])[0] + ")"
        return Check("srun-mpi", False, f"{kind} not among srun --mpi=list: {found}",
                     "set cluster.mpi to one of those (the image's OpenMPI needs pmix), "
                     "or none for gloo (no MPI needed)")
    return Check("srun-mpi", True, f"{kind} (available: {', '.join(types)})")


def check_gpus_per_node(wanted: int) -> Check:
    """At least ``wanted`` GPUs (gres) on some node of ``sinfo``."""
    if wanted == 0:
        return Check("gpus-per-node", True, "0 configured (CPU training)")
    gres = _output("sinfo", "-h", "-o", "%G") or ""
    counts = [int(n) for n in re.findall(r"gpu(?::[^:,()\s]+)?:(\d+)", gres)]
    if not counts or max(counts) < wanted:
        return Check("gpus-per-node", False, f"cluster.gpus_per_node={wanted}, sinfo's largest gres: "
                     f"{max(counts) if counts else 'no gpu gres'}",
                     "set cluster.gpus_per_node to the GPUs of one node (sinfo -o '%N %G')")
    return Check("gpus-per-node", True, f"{wanted} configured, up to {max(counts)} per node")


IMAGE_REFERENCE = re.compile(r"^(?:[\w.-]+(?::\d+)?[/#])?[a-z0-9._/-]+(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$")


def check_image_reference(image: str | None) -> Check:
    """A well-formed registry/name:tag (or registry#name:tag) reference, or an existing .sqsh file."""
    if not image:
        return Check("container-image", True, "none")
    if image.endswith(".sqsh"):
        ok = Path(image).is_file()
        return Check("container-image", ok, image if ok else f"{image}: no such file",
                     "" if ok else "enroot import the image to that path first (README, Docker)")
    if not IMAGE_REFERENCE.match(image) or ":" not in image.rsplit("/", 1)[-1]:
        return Check("container-image", False, f"{image!r} is not registry/name:tag",
                     "use e.g. registry.example.com/team/effnet:1.0 (a pinned tag, not latest)")
    return Check("container-image", True, image)


@dataclass(frozen=True)
class Partition:
    """What the largest node of a SLURM partition offers, as sinfo reports it."""

    name: str
    default: bool
    minutes: float | None  # time limit (None: infinite)
    nodes: int
    cpus: int
    mem_mb: int
    gpus: int


def slurm_minutes(limit: str) -> float | None:
    """A SLURM time limit ("infinite", "30:00" = M:S, "2:00:00", "1-12", "1-00:00:00") in minutes; None = none."""
    if limit.strip().lower() in ("infinite", "unlimited"):
        return None
    days, _, rest = limit.strip().rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:  # M, M:S, H:M:S
        hours, minutes, seconds = ([0] + parts + [0])[:3] if len(parts) < 3 else parts
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def partitions() -> dict[str, Partition]:
    """Every partition ``sinfo`` lists, its node groups merged (nodes summed, the largest node's resources)."""
    found: dict[str, Partition] = {}
    for line in (_output("sinfo", "-h", "-o", "%P|%l|%D|%c|%m|%G") or "").splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6 or not fields[2].isdigit():
            continue
        name, limit, nodes, cpus, mem, gres = fields
        gpus = max((int(n) for n in re.findall(r"gpu(?::[^:,()\s]+)?:(\d+)", gres)), default=0)
        part = Partition(name.rstrip("*"), name.endswith("*"), slurm_minutes(limit), int(nodes),
                         int(re.match(r"\d*", cpus).group() or 0), int(re.match(r"\d*", mem).group() or 0), gpus)
        if part.name in found:
            old = found[part.name]
            part = Partition(part.name, part.default or old.default, part.minutes, part.nodes + old.nodes,
                             max(part.cpus, old.cpus), max(part.mem_mb, old.mem_mb), max(part.gpus, old.gpus))
        found[part.name] = part
    return found


def request_checks(config: dict) -> list[Check]:
    """Every rule's SLURM request (nodes, CPUs and memory per node, GPUs, its longest time limit over all
    attempts) against the partition it goes to: a job that no node can hold stays PENDING for ever."""
    from effnet.cluster import requests

    cluster, known = config["cluster"], partitions()
    default = next((p for p in known.values() if p.default), None)
    checks = []
    for rule in cluster["jobs"]:
        asked = requests.rule_resources(config, rule)
        name = asked.get("slurm_partition") or (default.name if default else None)
        part = known.get(name)
        if part is None:
            checks.append(Check(f"request {rule}", False, f"partition {name or '(default)'} not in sinfo's "
                                f"({', '.join(known) or 'none listed'})", "set cluster.partition / gpu_partition "
                                f"or cluster.jobs.{rule}.partition to one of sinfo's partitions"))
            continue
        nodes = asked.get("nodes", 1)
        per_node = math.ceil(asked.get("tasks", 1) / nodes)
        gpus = int(asked["gres"].split(":")[-1]) if "gres" in asked else asked.get("gpu", 0)
        longest = requests.runtime(cluster, rule, cluster["max_attempts"])
        wants = {"nodes": (nodes, part.nodes), "CPUs per node": (per_node * asked["cpus_per_task"], part.cpus),
                 "MB per node": (asked["mem_mb"], part.mem_mb), "GPUs per node": (gpus, part.gpus),
                 f"min (attempt {cluster['max_attempts']})": (longest, part.minutes)}
        over = [f"{want:g} {what} > {has:g}" for what, (want, has) in wants.items() if has is not None and want > has]
        detail = (f"partition {part.name}: " + (", ".join(over) if over else
                  f"{nodes} node(s) x {per_node} task(s), {wants['CPUs per node'][0]} CPUs, {asked['mem_mb']} MB, "
                  f"{gpus} GPUs per node, up to {longest} min"))
        checks.append(Check(f"request {rule}", not over, detail,
                            f"lower cluster.jobs.{rule} (cpus, mem_mb, runtime), cluster.max_runtime or the node/GPU "
                            "counts, or choose a partition whose nodes hold it" if over else ""))
    return checks


def cluster_checks(cluster: dict) -> list[Check]:
    """What a first run on a new cluster needs, from the config's ``cluster`` section."""
    return [check_pyxis(cluster["container_image"]), check_mpi(cluster["mpi"]),
            check_gpus_per_node(cluster["gpus_per_node"]), check_image_reference(cluster["container_image"])]


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


def run_checks(config: dict | None = None) -> list[Check]:
    """Run every check; with a config also SLURM, GPUs, the cluster checks and every rule's request."""
    slurm = check_slurm(required=config is not None)
    checks = [
        check_tensorflow(), check_horovod(), check_dali(), check_dali_tf_plugin(),
        check_snakemake(), check_slurm_plugin(), check_python_deps(), slurm, check_gpus(required=config is not None),
    ]
    if config is None:
        return checks
    return checks + cluster_checks(config["cluster"]) + (request_checks(config) if slurm.ok else [])


def main(args: argparse.Namespace) -> int:
    config = None
    if args.cluster:
        from effnet.core.config import load_config

        config = load_config(args.config, batch=True)  # the runs of a batch share its cluster section
    checks = run_checks(config) + ([check_train_step()] if args.train_step else [])
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
                        help="also require SLURM and a GPU, and check Pyxis, the --mpi type, GPUs per node, the "
                             "container image of --config's cluster section and every rule's request against its "
                             "partition in sinfo (run on a GPU node of the cluster)")
    parser.add_argument("--train-step", action="store_true",
                        help="also run one real training step (B0 at 32 px, Horovod's tape, the optimizer) on "
                             "random images: Keras 3, Horovod and TensorFlow work together (the image build runs it)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"the config whose cluster section --cluster checks (default {DEFAULT_CONFIG})")
    parser.set_defaults(func=main)
