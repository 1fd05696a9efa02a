"""What each rule asks SLURM for and the command in front of its stage, from the config's ``cluster``
section: read while Snakemake parses the workflow (the rules import ``rule_resources``, ``attempts`` and
``launch_prefix``), before any job is submitted, and by ``doctor --cluster``.

The prefix runs ``workflow/scripts/launch.py`` in the job (``effnet.cluster.job``). Pyxis options
(--container-image/-mounts/-workdir, --no-container-mount-home) go on the srun that starts the stage,
never on sbatch, and only when cluster.container_image is set. Standard library only.
"""
from __future__ import annotations

import math
import os
import shlex
from pathlib import Path

from effnet.cluster import ledger, memory
from effnet.core import layout

# the workflow and the package live in one checkout (an editable install): the job runs this entry point
REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "workflow" / "scripts" / "launch.py"
GPU_RULES = ("train", "evaluate", "export", "infer", "benchmark_train", "benchmark_inference")
RANKED_RULES = ("train", "benchmark_train")  # one rank per GPU over cluster.nodes x gpus_per_node
# where README ("The production image") has users import the Dockerfile's image, as the presets name it
DEFAULT_IMAGE = "/shared/containers/effnet.sqsh"


class LaunchError(ValueError):
    """A cluster configuration the launch cannot honour (raised while Snakemake parses, before any job)."""


def train_layout(cluster: dict) -> tuple[int, int, int]:
    """(nodes, ranks per node, GPUs per node) of the train job: one rank per GPU, or per node on CPUs."""
    nodes, gpus = cluster["nodes"], cluster["gpus_per_node"]
    return nodes, max(gpus, 1), gpus


def runtime(cluster: dict, rule: str, attempt: int) -> int:
    """Time limit in minutes of a rule's attempt: the configured one, times runtime_growth per retry."""
    minutes = math.ceil(cluster["jobs"][rule]["runtime"] * cluster["runtime_growth"] ** (attempt - 1))
    return min(minutes, cluster["max_runtime"]) if cluster["max_runtime"] else minutes


def memory_mb(config: dict, rule: str, attempt: int) -> int:
    """mem_mb of a rule's attempt: the configured one, doubled after each attempt of its series that ended for
    memory, as its ledger says (effnet.cluster.memory); a first attempt reads nothing."""
    cluster = config["cluster"]
    configured = cluster["jobs"][rule]["mem_mb"]
    if attempt <= 1:
        return configured
    ended = ledger.previous_attempts(layout.attempts_ledger(config["run_dir"], rule), attempt)
    return memory.request_mb(configured, ended, cluster["max_mem_mb"], partition(cluster, rule))


def partition(cluster: dict, rule: str) -> str | None:
    """The partition a rule's jobs go to (None: SLURM's default)."""
    gpu = rule in GPU_RULES and cluster["gpus_per_node"] > 0
    return cluster["jobs"][rule]["partition"] or (gpu and cluster["gpu_partition"]) or cluster["partition"] or None


def attempts(config: dict, main_process: bool = True) -> int:
    """Snakemake `retries` of every rule: max_attempts submissions in all, counted by the Snakemake that
    submits; 0 in the Snakemake that runs the rule inside a SLURM job (its retries would rerun a stage
    stopped by its time limit in the same allocation, and use up the time the resubmission is for)."""
    return config["cluster"]["max_attempts"] - 1 if main_process else 0


def check(config: dict) -> None:
    """Refuse a cluster section that cannot work, before Snakemake submits anything."""
    cluster = config["cluster"]
    train = cluster["jobs"]["train"]
    if cluster["signal_seconds"] >= train["runtime"] * 60:
        raise LaunchError(f"cluster.signal_seconds={cluster['signal_seconds']} is not shorter than the train time "
                          f"limit (cluster.jobs.train.runtime={train['runtime']} min): training would be signalled "
                          "as it starts")
    for rule, job in cluster["jobs"].items():
        for key in ("runtime", "mem_mb"):
            if cluster[f"max_{key}"] and job[key] > cluster[f"max_{key}"]:
                raise LaunchError(f"cluster.jobs.{rule}.{key}={job[key]} exceeds cluster.max_{key}="
                                  f"{cluster[f'max_{key}']}")
    if cluster["container_workdir"] and not cluster["container_workdir"].startswith("/"):
        raise LaunchError(f"cluster.container_workdir={cluster['container_workdir']!r}: an absolute path is needed")


def rule_resources(config: dict, rule: str) -> dict:
    """Snakemake resources of a rule for snakemake-executor-plugin-slurm (and gpu for the local profile)."""
    check(config)
    cluster = config["cluster"]
    job = cluster["jobs"][rule]
    gpu = rule in GPU_RULES and cluster["gpus_per_node"] > 0
    queue = partition(cluster, rule)
    resources = {
        "runtime": lambda wildcards, attempt: runtime(cluster, rule, attempt),
        "mem_mb": job["mem_mb"],
        "cpus_per_task": job["cpus"],
    }
    if queue:
        resources["slurm_partition"] = queue
    if cluster["account"]:
        resources["slurm_account"] = cluster["account"]
    if cluster["qos"]:
        resources["qos"] = cluster["qos"]
    if rule in RANKED_RULES:
        nodes, per_node, gpus = train_layout(cluster)
        resources["nodes"] = nodes
        if nodes * per_node > 1:
            # the rule's shell starts its ranks itself (the plugin then adds no srun around it)
            resources["mpi"] = "srun"
            resources["tasks"] = nodes * per_node
            if gpus:
                resources["gres"] = f"gpu:{gpus}"  # per node
        elif gpus:
            resources["gpu"] = 1  # one rank: in the step the plugin starts, with its GPU
    elif gpu:
        resources["gpu"] = 1
    # Snakemake resubmits a failed job; SLURM requeueing it too (JobRequeue=1 after a node failure) would race
    # the resubmission: two trainers on one checkpoint directory
    resources["slurm_extra"] = "--no-requeue"
    if rule == "train":  # every rank (every step's processes; not the batch shell) gets SIGUSR1 before the limit
        resources["slurm_extra"] += f" --signal=USR1@{cluster['signal_seconds']}"
    if "gpu" in resources or "gres" in resources:
        # else the plugin adds sbatch --ntasks-per-gpu, which SLURM >= 23.11 refuses beside the
        # --cpus-per-task of the job's srun (SLURM_TRES_PER_TASK; plugin issues #342, #373)
        resources["tasks_per_gpu"] = 0
    return resources


def apptainer_image(config: dict) -> str:
    """The image of ``--software-deployment-method apptainer``: cluster.container_image, else DEFAULT_IMAGE; a
    registry name as docker://registry/name:tag."""
    image = config["cluster"]["container_image"] or DEFAULT_IMAGE
    return image if image.startswith(("/", ".")) else f"docker://{image}"


def pyxis_image(image: str) -> str:
    """registry/name:tag as Pyxis wants it (registry#name:tag); a path or an already converted name as is."""
    if image.startswith(("/", ".")) or "#" in image:
        return image
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return image


def container_options(config: dict, workdir: str | None = None) -> list[str]:
    """Pyxis options for every srun that starts a stage; [] without a configured image.

    Mounted at their own paths (so every path on a command line holds inside): the configured
    container_mounts, then the repository, Snakemake's working directory, run_dir, the data input and what
    ``train.init_from`` reads (``layout.init_from_home``), unless a configured mount already shows it at its
    own path (``/lustre/imagenet:/data`` does not: a run_dir ``/data/runs/x`` inside would be
    /lustre/imagenet/runs/x on the host, not the /data/runs/x Snakemake sees).
    """
    cluster = config["cluster"]
    if not cluster["container_image"]:
        return []
    workdir = workdir or os.getcwd()
    mounts = cluster["container_mounts"].split(",") if cluster["container_mounts"] else []
    covered = [parts[0] for parts in (m.split(":") for m in mounts) if len(parts) == 1 or parts[0] == parts[1]]
    init_from = config["train"]["init_from"]
    init_home = str(layout.init_from_home(init_from)) if init_from else None
    for path in (str(REPO), workdir, config["run_dir"], config["data"].get("input"), init_home):
        if not path:
            continue
        path = os.path.normpath(os.path.join(workdir, path))
        if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in covered):
            mounts.append(f"{path}:{path}")
            covered.append(path)
    return [f"--container-image={pyxis_image(cluster['container_image'])}",
            f"--container-mounts={','.join(mounts)}",
            f"--container-workdir={cluster['container_workdir'] or workdir}",
            "--no-container-mount-home"]


def launch_prefix(config: dict, rule: str, workdir: str | None = None, ranks: str | None = None,
                  attempt: int | None = None, driver: bool = False) -> str:
    """What a rule's shell puts in front of ``python -m effnet <stage> ...``; ``ranks`` (e.g. "{ranks}",
    filled in by the training benchmark) starts that many of the rule's ranks instead of all; ``attempt``
    (Snakemake's, from the rule's resources) decides with the rule's ledger whether the attempt runs. A
    ``driver`` stage starts its workers itself, each through a prefix with ``ranks``: it runs as it is, in the
    job's own step on the host."""
    check(config)
    cluster = config["cluster"]
    args = ["python", str(ENTRY), "--rule", rule]
    if attempt is not None:
        args += ["--attempt", str(attempt), "--crash-retries", str(cluster["crash_retries"]),
                 "--ledger", str(layout.attempts_ledger(config["run_dir"], rule))]
    if not driver:
        args += _placement(config, rule, ranks, workdir)
    return shlex.join(args + ["--"])


def _placement(config: dict, rule: str, ranks: str | None, workdir: str | None) -> list[str]:
    """The launch options that place the stage: its ranks over the job's nodes, and its container."""
    cluster, args = config["cluster"], []
    if rule in RANKED_RULES:
        nodes, per_node, gpus = train_layout(cluster)
        args += ["--nodes", str(nodes), "--tasks-per-node", str(per_node), "--gpus-per-task", str(min(gpus, 1)),
                 "--cpus-per-task", str(cluster["jobs"][rule]["cpus"]), "--mpi", cluster["mpi"]]
    if ranks:
        args += ["--ranks", ranks]
    return args + container_options(config, workdir)
