"""A single-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd as root,
every file in one directory, two fake GPUs, and a no-op Pyxis SPANK plugin.

Debian's SLURM (/usr/sbin/slurmctld, /usr/sbin/slurmd, /usr/bin/sbatch, ...) is used as installed.
The cluster's slurm.conf is passed by SLURM_CONF through wrapper scripts in ``<dir>/bin`` (put it
first on PATH): Snakemake's SLURM job-side helper drops every SLURM_* variable, SLURM_CONF included,
before it starts a rule, and the wrappers set it again; nothing under /etc is touched.

Fake GPUs: character devices made with mknod (``gres.conf`` File=), so --gpus/--gpus-per-task
schedule and set CUDA_VISIBLE_DEVICES; there is no GPU behind them.

The fake Pyxis plugin (``fake_pyxis.c``) accepts --container-image/--container-mounts/
--container-workdir/--no-container-mount-home, runs the task on the host and logs per task what it
was asked (``pyxis.log``): what the tests assert.

    python tests/slurm/cluster.py DIR      start one by hand (stop it with Ctrl-C)
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo", "sacct", "sacctmgr", "sshare", "salloc",
           "sstat")
GPUS = 2
BATCH_STEP = 4294967291  # SLURM_BATCH_SCRIPT as a step id


def unavailable() -> str | None:
    """Why a local cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (munged, slurmd)"
    missing = [p for p in (*DAEMONS.values(), "/usr/bin/sbatch", "/usr/bin/srun", "/usr/bin/squeue")
               if not os.access(p, os.X_OK)]
    if missing:
        return f"SLURM/munge are not installed ({', '.join(missing)}; `./setup.sh test` installs Debian's)"
    if not Path("/usr/include/slurm/spank.h").exists() or not shutil.which("gcc"):
        return "gcc and libslurm-dev (<slurm/spank.h>) are needed to build the fake Pyxis plugin"
    return None


def _controller_priority() -> None:
    """A real cluster's controller (slurmctld, munged) has a host of its own; here it shares 2 cores with the
    jobs and the tests. Starved, it answered the SLURM plugin's `scontrol show config` in over 10 s, the plugin
    took that as an unknown MinJobAge, switched to sacct (no accounting here) and never saw its jobs end.
    slurmd keeps the default: its jobs' tasks inherit its niceness (PropagatePrioProcess=0)."""
    os.nice(-10)


@dataclass
class Cluster:
    root: Path
    cpus: int = field(default_factory=lambda: os.cpu_count() or 2)
    memory_mb: int = 8000
    hostname: str = field(default_factory=socket.gethostname)
    port: int = 16817  # slurmctld's; slurmd's is the next (one cluster per port pair, side by side)
    processes: dict = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def pyxis_log(self) -> Path:
        return self.root / "pyxis.log"

    def env(self, base: dict | None = None) -> dict:
        """An environment whose SLURM commands talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        env["SLURM_CONF"] = str(self.conf)
        return env

    # -- setup ---------------------------------------------------------------------------------
    def write_files(self) -> None:
        root = self.root
        for sub in ("etc", "bin", "state", "spool", "log", "munge", "dev"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        os.chmod(root / "munge", 0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        for i in range(GPUS):  # character devices: gres.conf refuses plain files
            dev = root / "dev" / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(root / "fake_pyxis.so"),
                        str(HERE / "fake_pyxis.c")], check=True, capture_output=True, text=True)
        (root / "etc" / "plugstack.conf").write_text(
            f"required {root / 'fake_pyxis.so'} log={self.pyxis_log}\n")
        self.pyxis_log.touch()
        os.chmod(self.pyxis_log, 0o666)
        (root / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nName=gpu File={root / 'dev'}/nvidia[0-{GPUS - 1}]\n")
        (root / "etc" / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        host = self.hostname
        self.conf.write_text("\n".join([
            f"ClusterName=effnet-test-{self.port}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={self.port}", f"SlurmdPort={self.port + 1}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            f"PlugStackConfig={root / 'etc' / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2",
            "MinJobAge=3600",  # squeue shows finished jobs (Snakemake status, the tests) for an hour
            "KillWait=10", "InactiveLimit=0", "OverTimeLimit=0",
            "SchedulerParameters=sched_interval=5",
            "GresTypes=gpu",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
            f"Gres=gpu:{GPUS} State=UNKNOWN",
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        for name in CLIENTS:
            wrapper = self.bin / name
            wrapper.write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec /usr/bin/{name} \"$@\"\n")
            wrapper.chmod(0o755)

    def _start(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.processes[name] = subprocess.Popen(
            [DAEMONS[name], *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self.env(), start_new_session=True, preexec_fn=None if name == "slurmd" else _controller_priority)
        log.close()

    def start(self, timeout: float = 600) -> None:
        self.write_files()
        munge = self.root / "munge"
        self._start("munged", "-F", "--force", f"--key-file={munge / 'munge.key'}",
                    f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                    f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}")
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged")
        self._start("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._start("slurmd", "-D", "-f", str(self.conf))
        self._wait(self._node_idle, timeout, "the node to become idle")

    def _node_idle(self) -> bool:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(), capture_output=True, text=True)
        return proc.returncode == 0 and proc.stdout.strip().rstrip("*") == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.exists():
                parts.append(f"== {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (by PID, slurmd first)."""
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env(), capture_output=True)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    # -- what the jobs asked for -----------------------------------------------------------------
    def pyxis_records(self) -> list[dict]:
        """One record per started task: job, step, task, image, mounts, workdir, no_mount_home, argv."""
        records = []
        for line in self.pyxis_log.read_text().splitlines():
            job, step, task, image, mounts, workdir, no_home, *argv = line.split("\t")
            records.append({"job": int(job), "step": int(step), "task": int(task),
                            "image": None if image == "-" else image, "mounts": None if mounts == "-" else mounts,
                            "workdir": None if workdir == "-" else workdir, "no_mount_home": no_home == "1",
                            "argv": argv[0] if argv else ""})
        return records


if __name__ == "__main__":
    cluster = Cluster(Path(sys.argv[1]).resolve())
    cluster.start()
    print(f"cluster up: export PATH={cluster.bin}:$PATH SLURM_CONF={cluster.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
