"""How a stage is started: SLURM resources per rule and the srun/Pyxis launch line.

The rules import ``rule_resources``, ``attempts`` and ``launch_prefix`` (config -> Snakemake resources and
the command in front of ``python -m effnet <stage>``); the job runs this file:

    python workflow/scripts/launch.py --rule train [options] -- python -m effnet train ...

- Outside SLURM (no SLURM_JOB_ID: the local profile, a plain ``snakemake --cores``) the stage runs as it
  is, train with ``horovodrun -np G -H localhost:G`` when gpus_per_node G > 1.
- In a SLURM job, a multi-rank train starts its ranks with one srun (one task per GPU,
  ``--mpi=pmix|pmi2``; for ``mpi: none`` a gloo rendezvous started here, see effnet.ranks).
  A single-task stage runs in the step Snakemake's job-side helper started, or, when a container
  image is configured, in an ``srun --overlap`` step that carries the Pyxis options.
- Pyxis options (--container-image/-mounts/-workdir, --no-container-mount-home) go on the srun
  that starts the stage, never on sbatch, and only when cluster.container_image is set.

The exit status is the stage's (train: 75 after a signal and a checkpoint, then Snakemake retries).
Only the standard library is imported, except Horovod's rendezvous server for ``mpi: none``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
GPU_RULES = ("train", "evaluate", "export", "infer", "benchmark_train", "benchmark_inference")
RANKED_RULES = ("train", "benchmark_train")  # one rank per GPU over cluster.nodes x gpus_per_node
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)
LOGS = "logs"  # under run_dir (effnet.layout.LOGS)
# How long srun lets the other ranks run once one has exited. Not --kill-on-bad-exit: ranks that leave together
# (75 after a stop, 0 at the end) leave a second or so apart, and that kill would report 137/143 for the step.
# A rank that dies mid-step ends it within this, as the rest wait in their next allreduce.
RANK_EXIT_WAIT = 60
# What an attempt's exit status means to the next one (Snakemake retries every failure alike):
CONTINUE = 75  # stopped by a signal after a checkpoint (effnet.train.stop): always resumed, within max_attempts
USER_ERROR = 2  # a configuration or data error the stage reported: never retried, as nothing would change


class LaunchError(ValueError):
    """A cluster configuration the launch cannot honour (raised while Snakemake parses, before any job)."""


# -- from the config (Snakemake parse time) -------------------------------------------------------
def train_layout(cluster: dict) -> tuple[int, int, int]:
    """(nodes, ranks per node, GPUs per node) of the train job: one rank per GPU, or per node on CPUs."""
    nodes, gpus = cluster["nodes"], cluster["gpus_per_node"]
    return nodes, max(gpus, 1), gpus


def runtime(cluster: dict, rule: str, attempt: int) -> int:
    """Time limit in minutes of a rule's attempt: the configured one, times runtime_growth per retry."""
    minutes = math.ceil(cluster["jobs"][rule]["runtime"] * cluster["runtime_growth"] ** (attempt - 1))
    return min(minutes, cluster["max_runtime"]) if cluster["max_runtime"] else minutes


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
        if cluster["max_runtime"] and job["runtime"] > cluster["max_runtime"]:
            raise LaunchError(f"cluster.jobs.{rule}.runtime={job['runtime']} exceeds cluster.max_runtime="
                              f"{cluster['max_runtime']}")
    if cluster["container_workdir"] and not cluster["container_workdir"].startswith("/"):
        raise LaunchError(f"cluster.container_workdir={cluster['container_workdir']!r}: an absolute path is needed")


def rule_resources(config: dict, rule: str) -> dict:
    """Snakemake resources of a rule for snakemake-executor-plugin-slurm (and gpu for the local profile)."""
    check(config)
    cluster = config["cluster"]
    job = cluster["jobs"][rule]
    gpu = rule in GPU_RULES and cluster["gpus_per_node"] > 0
    partition = job["partition"] or (gpu and cluster["gpu_partition"]) or cluster["partition"]
    resources = {
        "runtime": lambda wildcards, attempt: runtime(cluster, rule, attempt),
        "mem_mb": job["mem_mb"],
        "cpus_per_task": job["cpus"],
    }
    if partition:
        resources["slurm_partition"] = partition
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
    container_mounts, then the repository, Snakemake's working directory, run_dir and the data input, unless
    a configured mount already shows it at its own path (``/lustre/imagenet:/data`` does not: a run_dir
    ``/data/runs/x`` inside would be /lustre/imagenet/runs/x on the host, not the /data/runs/x Snakemake sees).
    """
    cluster = config["cluster"]
    if not cluster["container_image"]:
        return []
    workdir = workdir or os.getcwd()
    mounts = cluster["container_mounts"].split(",") if cluster["container_mounts"] else []
    covered = [parts[0] for parts in (m.split(":") for m in mounts) if len(parts) == 1 or parts[0] == parts[1]]
    for path in (str(REPO), workdir, config["run_dir"], config["data"].get("input")):
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
                  attempt: int | None = None) -> str:
    """What a rule's shell puts in front of ``python -m effnet <stage> ...``; ``ranks`` (e.g. "{ranks}",
    filled in by the training benchmark) starts that many of the rule's ranks instead of all; ``attempt``
    (Snakemake's, from the rule's resources) decides with the rule's ledger whether the attempt runs."""
    check(config)
    cluster = config["cluster"]
    args = ["python", str(HERE), "--rule", rule]
    if attempt is not None:
        args += ["--attempt", str(attempt), "--crash-retries", str(cluster["crash_retries"]),
                 "--ledger", str(Path(config["run_dir"]) / LOGS / f"{rule}.attempts.jsonl")]
    if rule in RANKED_RULES:
        nodes, per_node, gpus = train_layout(cluster)
        args += ["--nodes", str(nodes), "--tasks-per-node", str(per_node), "--gpus-per-task", str(min(gpus, 1)),
                 "--cpus-per-task", str(cluster["jobs"][rule]["cpus"]), "--mpi", cluster["mpi"]]
    if ranks:
        args += ["--ranks", ranks]
    args += container_options(config, workdir)
    return shlex.join(args + ["--"])


# -- in the job (run time) -------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", required=True)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int, default=1)
    p.add_argument("--gpus-per-task", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--mpi", choices=("pmix", "pmi2", "none"), default="none")
    p.add_argument("--ranks", type=int, help="start this many ranks (at most --tasks-per-node per node) instead of "
                                             "nodes x tasks-per-node (the training benchmark's rank counts)")
    p.add_argument("--attempt", type=int, help="Snakemake's attempt number (1 = a new series of attempts)")
    p.add_argument("--ledger", type=Path, help="the rule's attempts and exit statuses (JSON lines)")
    p.add_argument("--crash-retries", type=int, default=2, help="retries after a crash (any other status)")
    p.add_argument("--container-image")
    p.add_argument("--container-mounts")
    p.add_argument("--container-workdir")
    p.add_argument("--no-container-mount-home", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.ranks:  # as few nodes as hold them (locally, on CPUs, more ranks than the train job's is fine)
        args.nodes = min(args.nodes, math.ceil(args.ranks / args.tasks_per_node))
        args.tasks_per_node = math.ceil(args.ranks / args.nodes)
        if args.ranks != args.nodes * args.tasks_per_node:
            p.error(f"--ranks {args.ranks}: not {args.nodes} node(s) x {args.tasks_per_node} rank(s)")
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("no command after --")
    return args


def pyxis_args(args: argparse.Namespace) -> list[str]:
    out = []
    for name in ("container_image", "container_mounts", "container_workdir"):
        if getattr(args, name):
            out.append(f"--{name.replace('_', '-')}={getattr(args, name)}")
    if args.container_image and args.no_container_mount_home:
        out.append("--no-container-mount-home")
    return out


def srun_command(args: argparse.Namespace, environ=os.environ) -> list[str] | None:
    """The srun line that starts the stage in a SLURM job, or None to run it in the current step."""
    tasks = args.nodes * args.tasks_per_node
    if tasks > 1:
        srun = ["srun", f"--nodes={args.nodes}", f"--ntasks={tasks}", f"--ntasks-per-node={args.tasks_per_node}",
                "--kill-on-bad-exit=0", f"--wait={RANK_EXIT_WAIT}", f"--mpi={args.mpi}"]
        if args.gpus_per_task:
            # every rank sees its node's GPUs (the step gets the job's; NCCL keeps NVLink peer-to-peer between
            # them, which --gpus-per-task's per-task cgroup would block) and takes its local rank's (effnet.ranks)
            srun.append("--gpu-bind=none")
        if args.cpus_per_task:
            srun.append(f"--cpus-per-task={args.cpus_per_task}")
    elif args.container_image:
        # inside the step Snakemake's job-side helper started: share its CPUs, memory and GPUs
        srun = ["srun", "--overlap", "--nodes=1", "--ntasks=1"]
        cpus = args.cpus_per_task or environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            srun.append(f"--cpus-per-task={cpus}")
    else:
        return None
    return srun + pyxis_args(args) + args.command


def local_command(args: argparse.Namespace) -> list[str]:
    """Outside SLURM: the stage itself, or horovodrun over this machine's GPUs for a multi-GPU train."""
    ranks = args.ranks or (args.tasks_per_node if args.gpus_per_task else 1)
    if ranks > 1:
        return ["horovodrun", "-np", str(ranks), "-H", f"localhost:{ranks}", *args.command]
    return args.command


def _job_hosts(job_id: str) -> list[str]:
    nodelist = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                          check=True).stdout.split()


def _address_towards(hosts: list[str]) -> str:
    """This node's address as the job's other nodes reach it (127.0.0.1 when the job has only this one)."""
    me = socket.gethostname().split(".")[0]
    others = [h for h in hosts if h.split(".")[0] != me]
    if not others:
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(others[0]), 9))
        return s.getsockname()[0]


def gloo_rendezvous(args: argparse.Namespace, environ: dict) -> object:
    """Start Horovod's rendezvous for the job's ranks (as horovodrun does) and export its address."""
    from horovod.runner.common.util import hosts as hvd_hosts
    from horovod.runner.http.http_server import RendezvousServer

    names = _job_hosts(environ["SLURM_JOB_ID"])[: args.nodes]
    plan = hvd_hosts.get_host_assignments(
        hvd_hosts.parse_hosts(",".join(f"{h}:{args.tasks_per_node}" for h in names)),
        args.nodes * args.tasks_per_node)
    server = RendezvousServer(verbose=0)
    port = server.start()
    server.init(plan)
    environ.update({"HOROVOD_GLOO_RENDEZVOUS_ADDR": _address_towards(names),
                    "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
                    "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"})
    return server


def run(command: list[str], env: dict) -> int:
    """Run ``command``, forwarding termination signals to it; its exit status (128+N if killed by N)."""
    # the first line of an attempt's log: when and in which job it ran
    job = f" (SLURM job {env['SLURM_JOB_ID']})" if "SLURM_JOB_ID" in env else ""
    print(f"launch: {time.strftime('%Y-%m-%d %H:%M:%S')}{job}:", shlex.join(command), file=sys.stderr, flush=True)
    child = subprocess.Popen(command, env=env)

    def forward(signum, frame):
        child.send_signal(signum)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


def previous_statuses(ledger: Path, attempt: int) -> list[int | None]:
    """Exit statuses of this series' attempts before ``attempt`` (None: killed before it could record one)."""
    entries = []
    for number, line in enumerate(ledger.read_text().splitlines() if ledger.exists() else [], 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill mid-write: the rest still counts
            print(f"launch: {ledger}:{number}: not a JSON line, skipped: {line[:80]!r}", file=sys.stderr)
    starts = [i for i, e in enumerate(entries) if e.get("start") and e.get("attempt") == 1]
    series = entries[starts[-1]:] if starts else []
    ended = {e["attempt"]: e["status"] for e in series if "status" in e}
    return [ended.get(n) for n in range(1, attempt)]


def refusal(statuses: list[int | None], crash_retries: int) -> tuple[int, str] | None:
    """(exit status, why) when the attempt after ``statuses`` must not run; None to run it."""
    if USER_ERROR in statuses:
        return USER_ERROR, (f"attempt {statuses.index(USER_ERROR) + 1} ended with status {USER_ERROR} (a "
                            "configuration or data error, see its log): not retried, fix it and run Snakemake again")
    crashes = [s for s in statuses if s not in (0, CONTINUE)]
    if len(crashes) > crash_retries:
        status = crashes[-1] if crashes[-1] is not None else 1
        return status, (f"{len(crashes)} attempts crashed (statuses {crashes}; None = killed): no more retries "
                        f"(cluster.crash_retries={crash_retries})")
    return None


def record(ledger: Path | None, entry: dict) -> None:
    """Append ``entry`` to the ledger as one line (on a line of its own after a line torn by a kill)."""
    if ledger:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(ledger, "ab+") as f:  # appends go to the end whatever was read
            torn = False
            if f.seek(0, os.SEEK_END):
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            f.write(b"\n" * torn + json.dumps(entry).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.attempt and args.ledger:
        refused = refusal(previous_statuses(args.ledger, args.attempt), args.crash_retries)
        if refused:
            print(f"launch: {args.rule} attempt {args.attempt}: {refused[1]}", file=sys.stderr, flush=True)
            return refused[0]
    job = {"attempt": args.attempt, "job": os.environ.get("SLURM_JOB_ID")} if args.attempt else {}
    record(args.ledger, {**job, "start": time.strftime("%Y-%m-%d %H:%M:%S")})
    status = start(args)
    record(args.ledger, {**job, "status": status})
    return status


def start(args: argparse.Namespace) -> int:
    """Run the stage as ``args`` say (locally, in this step, or in an srun step); its exit status."""
    env = dict(os.environ)
    if "SLURM_JOB_ID" not in env:
        return run(local_command(args), env)
    if args.container_image:  # provenance records it (Pyxis passes the environment into the container)
        env["EFFNET_CONTAINER_IMAGE"] = args.container_image
    command = srun_command(args, env)
    if command is None:
        return run(args.command, env)
    if args.nodes * args.tasks_per_node > 1:
        # a batch step's own layout must not leak into the step (Snakemake's helper strips it too)
        env = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "SRUN_")) or k in ("SLURM_JOB_ID",
                                                                                         "SLURM_CONF")}
        env["SLURM_JOB_ID"] = os.environ["SLURM_JOB_ID"]
        if args.mpi == "none":
            server = gloo_rendezvous(args, env)  # noqa: F841 (serves until this process exits)
    return run(command, env)


if __name__ == "__main__":
    sys.exit(main())
