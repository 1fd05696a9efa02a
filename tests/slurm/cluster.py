"""A SLURM cluster on this machine for the tests: munged, slurmctld and slurmd as root, every file in one
directory, two fake GPUs per node, and a stand-in Pyxis SPANK plugin.

One node (the default) is this host on 127.0.0.1. With ``nodes=N`` > 1 every node is a slurmd in a network
namespace of its own (``effnet<tag>n<i>``, address 10.77.<tag>.<i+2> on a bridge ``efbr<tag>`` whose
10.77.<tag>.1 is the controller's): what crosses nodes (srun's task I/O, gloo, the rendezvous) crosses a
network, as on a cluster, while the file system is shared, as a cluster's shared one is. The node names
resolve to nothing, as on clusters whose NodeName is not a DNS name.

Two SLURM versions (``SLURMS``): Debian's 22.05 (/usr/sbin/slurmctld, /usr/bin/sbatch, ...) as installed, and
24.11, which ``./setup.sh test`` builds from Debian trixie's source into a cache outside the clone. The cluster's
slurm.conf is passed by SLURM_CONF through wrapper scripts in ``<dir>/bin`` (put it
first on PATH): Snakemake's SLURM job-side helper drops every SLURM_* variable, SLURM_CONF included,
before it starts a rule, and the wrappers set it again; nothing under /etc is touched.

Memory is enforced on a one-node cluster as sites do (task/cgroup with ConstrainRAMSpace, cgroup v1 here): a job
past its --mem is OOM-killed, and SLURM records OUT_OF_MEMORY. A job's cgroup is named by its id under the node's
(``slurm_<node>/uid_<uid>/job_<id>``), and the one-node clusters side by side share the host's name: each numbers
its jobs from a range of its own (``first_job_id``), and removes what an earlier cluster killed mid-job left in
that range (task/cgroup would reuse such a directory, its old charges and settings with it).

Fake GPUs: character devices made with mknod (``gres.conf`` File=), so --gpus/--gpus-per-task
schedule and set CUDA_VISIBLE_DEVICES; there is no GPU behind them.

The stand-in Pyxis plugin (``fake_pyxis.c``) takes --container-image/--container-mounts/
--container-workdir/--no-container-mount-home and gives each such task a container's view of the files: a
root of its own where the places user data lives (``HIDDEN``: the temporary directory, the repository's
parent, home) are empty and only the mounts show host files; it checks the image's name, and logs per task
what it was asked (``pyxis.log``).

    python tests/slurm/cluster.py DIR [NODES [VERSION]]      start one by hand (stop it with Ctrl-C)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
# where setup.sh builds SLURMs (SLURM_NEW_PREFIX there): a cache outside the clone
CACHE = Path(os.environ.get("EFFNET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "effnet")


@dataclass(frozen=True)
class Slurm:
    """An installation of SLURM: its version (major.minor) and the prefix of its sbin/, bin/ and include/."""

    version: str
    prefix: Path

    def daemon(self, name: str) -> str:
        return f"/usr/sbin/{name}" if name in ("munged", "mariadbd") else str(self.prefix / "sbin" / name)

    def client(self, name: str) -> str:
        return str(self.prefix / "bin" / name)


# The versions the SLURM tests run on (what setup.sh installs or builds: SLURM_NEW there)
SLURMS = {"22.05": Slurm("22.05", Path("/usr")), "24.11": Slurm("24.11", CACHE / "slurm-24.11.5")}
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo", "sacct", "sacctmgr", "sshare", "salloc",
           "sstat")
GPUS = 2
# What a containerised task does not see unless a mount shows it: where the tests' files, the clone and home are
HIDDEN = sorted({os.path.realpath(p) for p in (tempfile.gettempdir(), HERE.parent.parent.parent, Path.home())} - {"/"})
# What an image holds that lives under a hidden directory on this machine (pyenv's Python under home): shown read-only
IMAGE_DIRS = sorted({os.path.realpath(sys.base_prefix)} - {"/usr", "/usr/local"})
BATCH_STEP = 4294967291  # SLURM_BATCH_SCRIPT as a step id
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")  # where task/cgroup (v1) puts each job's memory cgroup
JOB_IDS = 100_000  # job ids per cluster


def unavailable(nodes: int = 1, slurm: Slurm = SLURMS["22.05"]) -> str | None:
    """Why a local cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (munged, slurmd)"
    missing = [p for p in (*map(slurm.daemon, DAEMONS), *map(slurm.client, ("sbatch", "srun", "squeue")))
               if not os.access(p, os.X_OK)]
    if missing:
        return (f"SLURM {slurm.version}/munge are not installed ({', '.join(missing)}; `./setup.sh test` installs "
                "or builds them)")
    if nodes > 1 and not shutil.which("ip"):
        return "a cluster of several nodes needs iproute2's ip (network namespaces)"
    if not (slurm.prefix / "include/slurm/spank.h").exists() or not shutil.which("gcc"):
        return f"gcc and SLURM {slurm.version}'s <slurm/spank.h> are needed to build the fake Pyxis plugin"
    return None


def version_of(slurm: Slurm) -> str:
    """What the installation's slurmctld says its version is (``slurm 24.11.5`` -> ``24.11.5``)."""
    out = subprocess.run([slurm.daemon("slurmctld"), "-V"], capture_output=True, text=True).stdout.split()
    return out[-1] if out else "unknown"


def _controller_priority() -> None:
    """A real cluster's controller (slurmctld, munged) has a host of its own; here it shares 2 cores with the
    jobs and the tests. Starved, it answered the SLURM plugin's `scontrol show config` in over 10 s, the plugin
    took that as an unknown MinJobAge, switched to sacct (no accounting here) and never saw its jobs end.
    slurmd keeps the default: its jobs' tasks inherit its niceness (PropagatePrioProcess=0)."""
    os.nice(-10)


@dataclass
class Cluster:
    root: Path
    slurm: Slurm = SLURMS["22.05"]
    cpus: int = field(default_factory=lambda: os.cpu_count() or 2)
    memory_mb: int = 8000
    hostname: str = field(default_factory=socket.gethostname)
    port: int = 16817  # slurmctld's; slurmd's is the next (one cluster per port pair, side by side)
    nodes: int = 1
    accounting: bool = False  # slurmdbd on a MariaDB of its own, so that sacct answers; jobs leave squeue at once
    processes: dict = field(default_factory=dict)

    @property
    def tag(self) -> int:
        """This cluster's number among those side by side (from its port): its namespaces' and subnet's."""
        return (self.port - 16817) // 2

    @property
    def node_names(self) -> list[str]:
        return [self.hostname] if self.nodes == 1 else [f"effnet{self.tag}n{i}" for i in range(self.nodes)]

    def node_address(self, i: int) -> str:
        return "127.0.0.1" if self.nodes == 1 else f"10.77.{self.tag}.{i + 2}"

    @property
    def controller_address(self) -> str:
        return "127.0.0.1" if self.nodes == 1 else f"10.77.{self.tag}.1"

    @property
    def dbd_port(self) -> int:
        return self.port + 1000

    @property
    def database_port(self) -> int:
        return self.port + 2000

    @property
    def bridge(self) -> str:
        return f"efbr{self.tag}"

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
    @property
    def first_job_id(self) -> int:
        """The first of this cluster's job ids (JOB_IDS of them: one range per cluster side by side)."""
        return 1 + self.tag * JOB_IDS

    def _remove_stale_cgroups(self) -> None:
        """Empty the memory cgroups of this cluster's job ids that an earlier cluster left (its tasks killed)."""
        for job in (CGROUP_MEMORY / f"slurm_{self.hostname}").glob("uid_*/job_*"):
            if not self.first_job_id <= int(job.name[4:]) < self.first_job_id + JOB_IDS:
                continue
            for group in sorted((job, *job.rglob("*")), key=lambda p: -len(p.parts)):
                if group.is_dir():
                    for pid in (group / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    for _ in range(50):
                        with contextlib.suppress(OSError):
                            group.rmdir()
                            break
                        time.sleep(0.1)

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
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-I{self.slurm.prefix / 'include'}", "-o",
                        str(root / "fake_pyxis.so"), str(HERE / "fake_pyxis.c")], check=True, capture_output=True,
                       text=True)
        (root / "container").mkdir(exist_ok=True)  # each task's root, mounted in its own namespace
        (root / "etc" / "plugstack.conf").write_text(
            f"required {root / 'fake_pyxis.so'} log={self.pyxis_log} hide={':'.join(HIDDEN)} "
            f"image={':'.join(IMAGE_DIRS)} scratch={root / 'container'}\n")
        self.pyxis_log.touch()
        os.chmod(self.pyxis_log, 0o666)
        (root / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nName=gpu File={root / 'dev'}/nvidia[0-{GPUS - 1}]\n")
        # memory enforced as sites do (a job's processes killed past its --mem, OUT_OF_MEMORY), on one node: the
        # cgroup tree is the host's, which several slurmd on one host would share (their jobs' cgroups collide)
        (root / "etc" / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n" + (
            "ConstrainRAMSpace=yes\nConstrainSwapSpace=yes\nConstrainCores=no\nConstrainDevices=no\n"
            if self.nodes == 1 else ""))
        # PMIx's per-step client directory (default /tmp/spmix_appdir_<uid>_<step>): one per cluster, and one per
        # node below (each node's namespace mounts its own directory there), as on nodes with their own /tmp
        (root / "etc" / "mpi.conf").write_text(f"PMIxCliTmpDirBase={root / 'pmix'}\n")
        (root / "pmix").mkdir(exist_ok=True)
        multi = self.nodes > 1  # several slurmd on one host: each its own spool, pid and log (%n: node name)
        spool, pid, log = (f"spool/{'%n' if multi else ''}", f"slurmd{'-%n' if multi else ''}.pid",
                           f"log/slurmd{'-%n' if multi else ''}.log")
        nodes = [f"NodeName={name} NodeAddr={self.node_address(i)} CPUs={self.cpus} RealMemory={self.memory_mb} "
                 f"Gres=gpu:{GPUS} State=UNKNOWN" for i, name in enumerate(self.node_names)]
        self.conf.write_text("\n".join([
            f"ClusterName=effnet-test-{self.port}", f"FirstJobId={self.first_job_id}",
            f"SlurmctldHost={self.hostname}({self.controller_address})",
            f"SlurmctldPort={self.port}", f"SlurmdPort={self.port + 1}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / spool}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / pid}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / log}",
            f"PlugStackConfig={root / 'etc' / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc", f"TaskPlugin=task/{'none' if multi else 'cgroup'}",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            *(["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
               f"AccountingStoragePort={self.dbd_port}",
               f"AccountingStoragePass={root / 'munge' / 'munge.socket'}",  # the munge socket towards slurmdbd
               "MinJobAge=2"]  # squeue forgets a job within a minute
              if self.accounting else
              ["AccountingStorageType=accounting_storage/none",
               "MinJobAge=3600"]),  # squeue shows finished jobs (Snakemake status, the tests) for an hour
            "MpiDefault=none", "ReturnToService=2",
            "KillWait=10", "InactiveLimit=0", "OverTimeLimit=0",
            "SchedulerParameters=sched_interval=5",
            "GresTypes=gpu",
            # every node claims the host's CPUs and memory: slurmd takes the configured values as they are
            *(["SlurmdParameters=config_overrides"] if multi else []),
            *nodes,
            f"PartitionName=test Nodes={','.join(self.node_names)} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        if self.accounting:
            dbd = self.root / "etc" / "slurmdbd.conf"  # found beside SLURM_CONF's file
            dbd.write_text("\n".join([
                "AuthType=auth/munge", f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
                "DbdAddr=127.0.0.1", f"DbdHost={self.hostname}", f"DbdPort={self.dbd_port}", "SlurmUser=root",
                "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={self.database_port}",
                "StorageUser=slurm", "StoragePass=effnet-test", f"StorageLoc=slurm_acct_{self.port}",
                f"PidFile={root / 'slurmdbd.pid'}", f"LogFile={root / 'log' / 'slurmdbd.log'}", ""]))
            dbd.chmod(0o600)
        for name in CLIENTS:
            wrapper = self.bin / name
            wrapper.write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec {self.slurm.client(name)} \"$@\"\n")
            wrapper.chmod(0o755)

    def _start(self, name: str, *args: str, key: str | None = None, netns: str | None = None) -> None:
        log = open(self.root / "log" / f"{key or name}.out", "ab")
        # a node's own host name, resolving (through the namespace's /etc/netns/<ns>/hosts) to its address, its
        # own PMIx client directory and its own munge directory (where its munged's socket is), as on nodes with
        # their own /tmp and munged
        pmix, munge = self.root / "pmix", self.root / "munge"
        node = (f'hostname {netns} && mkdir -p {pmix}/{netns} && mount --bind {pmix}/{netns} {pmix} '
                f'&& mount --bind {munge}-{netns} {munge} && exec "$@"')
        prefix = ["ip", "netns", "exec", netns, "unshare", "--uts", "--mount", "--propagation", "private",
                  "sh", "-c", node, "sh"] if netns else []
        self.processes[key or name] = subprocess.Popen(
            [*prefix, self.slurm.daemon(name), *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self.env(), start_new_session=True, preexec_fn=None if name == "slurmd" else _controller_priority)
        log.close()

    def _netns(self, i: int) -> str:
        return f"effnet{self.tag}n{i}"

    def _network(self) -> None:
        """A bridge with the controller's address and one namespace per node, linked to it by a veth pair."""
        self._remove_network()
        ip = ["ip"]
        subprocess.run([*ip, "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run([*ip, "addr", "add", f"{self.controller_address}/24", "dev", self.bridge], check=True)
        subprocess.run([*ip, "link", "set", self.bridge, "up"], check=True)
        for i in range(self.nodes):
            ns, outside = self._netns(i), f"ef{self.tag}v{i}"
            subprocess.run([*ip, "netns", "add", ns], check=True)
            subprocess.run([*ip, "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns],
                           check=True)
            subprocess.run([*ip, "link", "set", outside, "master", self.bridge, "up"], check=True)
            inside = [*ip, "netns", "exec", ns, "ip"]
            subprocess.run([*inside, "addr", "add", f"{self.node_address(i)}/24", "dev", "eth0"], check=True)
            subprocess.run([*inside, "link", "set", "eth0", "up"], check=True)
            subprocess.run([*inside, "link", "set", "lo", "up"], check=True)
            hosts = Path("/etc/netns") / ns / "hosts"
            hosts.parent.mkdir(parents=True, exist_ok=True)
            hosts.write_text(Path("/etc/hosts").read_text() + "".join(
                f"{self.node_address(j)} {name}\n" for j, name in enumerate(self.node_names)))

    def _remove_network(self) -> None:
        for i in range(self.nodes):
            subprocess.run(["ip", "netns", "del", self._netns(i)], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / self._netns(i), ignore_errors=True)
            subprocess.run(["ip", "link", "del", f"ef{self.tag}v{i}"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def start(self, timeout: float = 600) -> None:
        found = version_of(self.slurm)
        if not found.startswith(self.slurm.version + "."):
            raise RuntimeError(f"{self.slurm.daemon('slurmctld')} is SLURM {found}, not {self.slurm.version}")
        self.write_files()
        if self.nodes == 1:
            self._remove_stale_cgroups()
        self._start_munged(timeout)
        if self.accounting:
            self._start_accounting(timeout)
        if self.nodes > 1:
            self._network()
        self._start("slurmctld", "-D", "-i", "-f", str(self.conf))
        if self.nodes == 1:
            self._start("slurmd", "-D", "-f", str(self.conf))
        for i, name in enumerate(self.node_names if self.nodes > 1 else []):
            # each node its own munged (one key): a munged decodes a credential once (its replay cache), and
            # SLURM >= 23.11 has every node of a step decode the launch credential
            own = self.root / f"munge-{self._netns(i)}"
            own.mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(self.root / "munge" / "munge.key", own / "munge.key")
            self._start_munged(timeout, key=f"munged-{name}", netns=self._netns(i))
            self._start("slurmd", "-D", "-N", name, "-f", str(self.conf), key=f"slurmd-{name}", netns=self._netns(i))
        self._wait(self._node_idle, timeout, "the nodes to become idle")

    def _start_munged(self, timeout: float, key: str | None = None, netns: str | None = None) -> None:
        munge = self.root / "munge"
        self._start("munged", "-F", "--force", f"--key-file={munge / 'munge.key'}",
                    f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                    f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}", key=key, netns=netns)
        socket = self.root / (f"munge-{netns}" if netns else "munge") / "munge.socket"
        self._wait(socket.exists, timeout, key or "munged")

    def _start_accounting(self, timeout: float) -> None:
        """Debian's MariaDB on loopback with a user for slurmdbd, slurmdbd, and this cluster registered in it."""
        data, socket = self.root / "mysql", self.root / "mysql.sock"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root"], check=True,
                       capture_output=True)
        self._start("mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={socket}",
                    f"--port={self.database_port}", "--bind-address=127.0.0.1", "--user=root")
        self._wait(socket.exists, timeout, "mariadbd")
        subprocess.run(["mariadb", "--no-defaults", "-S", str(socket), "-u", "root", "-e",
                        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'effnet-test'; "
                        "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1'"], check=True, capture_output=True)
        self._start("slurmdbd", "-D")
        add = ["sacctmgr", "-i", "add", "cluster", f"effnet-test-{self.port}"]
        self._wait(lambda: subprocess.run(add, env=self.env(), capture_output=True).returncode == 0, timeout,
                   "slurmdbd to register the cluster")

    def _node_idle(self) -> bool:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(), capture_output=True, text=True)
        states = [state.rstrip("*") for state in proc.stdout.split()]
        return proc.returncode == 0 and states == ["idle"] * self.nodes

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
        slurmds = [key for key in self.processes if key.startswith("slurmd")]
        mungeds = [key for key in self.processes if key.startswith("munged")]
        for name in (*slurmds, "slurmctld", "slurmdbd", "mariadbd", *mungeds):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.nodes > 1:
            self._remove_network()

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
    cluster = Cluster(Path(sys.argv[1]).resolve(), nodes=int(sys.argv[2]) if len(sys.argv) > 2 else 1,
                      slurm=SLURMS[sys.argv[3] if len(sys.argv) > 3 else "22.05"], port=16895)
    cluster.start()
    print(f"cluster up: export PATH={cluster.bin}:$PATH SLURM_CONF={cluster.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
