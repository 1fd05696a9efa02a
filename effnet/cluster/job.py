"""In a rule's job: start its stage as the launch prefix asked (``python workflow/scripts/launch.py --rule R
[options] -- python -m effnet <stage> ...``), after the rule's ledger agreed that this attempt runs.

- Outside SLURM (no SLURM_JOB_ID: the local profile, a plain ``snakemake --cores``) the stage runs as it
  is, train with ``horovodrun --gloo -np G -H localhost:G`` when gpus_per_node G > 1
  (gloo: the local launch the tests run, whichever controllers Horovod has).
- In a SLURM job, a multi-rank train starts its ranks with one srun (one task per GPU,
  ``--mpi=pmix|pmi2``; for ``mpi: none`` a gloo rendezvous started here, see effnet.core.ranks).
  A single-task stage runs in the step Snakemake's job-side helper started, or, when a container
  image is configured, in an ``srun --overlap`` step that carries the Pyxis options.

The exit status is the stage's (train: 75 after a signal and a checkpoint; see ``effnet.cluster.ledger``); a stage
killed for memory is recorded so (``effnet.cluster.memory``), which the next attempt's request reads.
Only the standard library is imported, except Horovod's rendezvous server for ``mpi: none``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from effnet.cluster import ledger, memory
from effnet.core import cgroup
from effnet.core.ranks import source_address

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)
# How long srun lets the other ranks run once one has exited. Not --kill-on-bad-exit: ranks that leave together
# (75 after a stop, 0 at the end) leave a second or so apart, and that kill would report 137/143 for the step.
# A rank that dies mid-step ends it within this, as the rest wait in their next allreduce.
RANK_EXIT_WAIT = 60
# how horovodrun (gloo) reports a rank that failed, on its standard output
HOROVODRUN_RANK_STATUS = re.compile(r"^Process \d+ exit with status code (\d+)\.$", re.M)


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
            # them, which --gpus-per-task's per-task cgroup would block) and takes its local rank's (effnet.core.ranks)
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
        return ["horovodrun", "--gloo", "-np", str(ranks), "-H", f"localhost:{ranks}", *args.command]
    return args.command


def _job_hosts(job_id: str) -> list[str]:
    nodelist = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                          check=True).stdout.split()


def node_address(name: str) -> str:
    """A node's address as SLURM reaches it (its NodeAddr: node names need not resolve)."""
    line = subprocess.run(["scontrol", "-o", "show", "node", name], capture_output=True, text=True,
                          check=True).stdout
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    return fields.get("NodeAddr") or socket.gethostbyname(name)


def _address_towards(hosts: list[str], me: str) -> str:
    """This node's (``me``'s) address as the job's other nodes reach it (127.0.0.1 when the job has only this one)."""
    others = [h for h in hosts if h != me]
    if not others:
        return "127.0.0.1"
    return source_address(node_address(others[0]))


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
    me = environ.get("SLURMD_NODENAME", socket.gethostname())
    environ.update({"HOROVOD_GLOO_RENDEZVOUS_ADDR": _address_towards(names, me),
                    "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
                    "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"})
    return server


def run(command: list[str], env: dict) -> int:
    """Run ``command``, forwarding termination signals to it; its exit status (128+N if killed by N). horovodrun
    ends with 1 whatever its ranks' statuses: for it, the status of the first rank that failed, as it reports it."""
    # the first line of an attempt's log: when and in which job it ran
    job = f" (SLURM job {env['SLURM_JOB_ID']})" if "SLURM_JOB_ID" in env else ""
    print(f"launch: {time.strftime('%Y-%m-%d %H:%M:%S')}{job}:", shlex.join(command), file=sys.stderr, flush=True)
    horovodrun = command[0] == "horovodrun"
    child = subprocess.Popen(command, env=env, **(dict(stdout=subprocess.PIPE, encoding="utf-8", errors="replace")
                                                  if horovodrun else {}))

    def forward(signum, frame):
        child.send_signal(signum)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    ranks = []
    for line in child.stdout or ():  # horovodrun's: copied as it comes
        sys.stdout.write(line)
        sys.stdout.flush()
        ranks += [int(code) for code in HOROVODRUN_RANK_STATUS.findall(line)]
    code = child.wait()
    if horovodrun and code and ranks:
        return ranks[0]
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    job_id, mem_mb = os.environ.get("SLURM_JOB_ID"), memory.job_memory_mb()
    if args.attempt and args.ledger:
        ended = ledger.previous_attempts(args.ledger, args.attempt)
        refused = ledger.refusal(ended, args.crash_retries)
        if refused:
            print(f"launch: {args.rule} attempt {args.attempt}: {refused[1]}", file=sys.stderr, flush=True)
            return refused[0]
        short = [(n, e) for n, e in enumerate(ended, 1) if memory.ended_for_memory(e)]
        if short:
            number, entry = short[-1]
            print(f"launch: {args.rule} attempt {args.attempt}: attempt {number} ended for memory with "
                  f"{entry.get('mem_mb') or 'unknown'} MB; this one has {mem_mb or 'unknown'} MB", file=sys.stderr,
                  flush=True)
    job = {"attempt": args.attempt, "job": job_id} if args.attempt else {}
    ledger.record(args.ledger, {**job, "start": time.strftime("%Y-%m-%d %H:%M:%S"), "mem_mb": mem_mb})
    kills = cgroup.oom_kills()
    status = start(args)
    seen = memory.seen_here(status, kills, job_id)
    if seen:
        print(f"launch: {args.rule}: the stage ended for memory ({seen}) with {mem_mb or 'unknown'} MB: the "
              "workflow's next attempt asks for twice that (up to cluster.max_mem_mb)", file=sys.stderr, flush=True)
    log = ledger.attempt_log(args.ledger, args.rule) if args.ledger else None
    ledger.record(args.ledger, {**job, "status": status, **({"ended": memory.MEMORY, "mem_mb": mem_mb} if seen else {}),
                                **({"log": str(log)} if log else {})})
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


