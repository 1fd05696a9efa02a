"""Which rank this process is, under any launcher, and the device it trains on.

One code path for every launcher: a single process, ``horovodrun`` (gloo or MPI), ``mpirun``,
and SLURM's ``srun`` (``--mpi=pmix|pmi2``: Horovod's MPI controller reads PMIx/PMI; ``--mpi=none``: gloo, with
HOROVOD_* variables from ``slurm_gloo_environment`` and a rendezvous started by the job). Without an MPI launcher
Horovod runs gloo, whichever controllers it was built with.
A launcher that says there are N tasks while Horovod comes up with fewer is an error: a
rank that silently trains alone is a known trap of the reference.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from effnet.core import resources
from effnet.core.errors import UserError

# Variables that carry the world size, by launcher, in the order they are trusted.
WORLD_SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS")
# Variables an MPI launcher sets in each rank (mpirun, srun --mpi=pmix, srun --mpi=pmi2).
MPI_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks and what it trains on."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    device: str
    controller: str  # Horovod's: "mpi" (started by an MPI launcher) or "gloo"

    @property
    def chief(self) -> bool:
        return self.rank == 0


def launcher_world_size(environ=os.environ) -> tuple[int, str] | None:
    """The world size the launcher announced and the variable it came from, if any."""
    for name in WORLD_SIZE_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name]), name
    return None


def slurm_gloo_environment(environ=os.environ) -> dict[str, str]:
    """HOROVOD_* variables for gloo under ``srun --mpi=none``, from the task's SLURM variables.

    The job must also export HOROVOD_GLOO_RENDEZVOUS_ADDR/PORT of a rendezvous it started.
    """
    nodes = int(environ["SLURM_NNODES"])
    per_node = int(environ["SLURM_NTASKS"]) // nodes
    return {
        "HOROVOD_RANK": environ["SLURM_PROCID"], "HOROVOD_SIZE": environ["SLURM_NTASKS"],
        "HOROVOD_LOCAL_RANK": environ["SLURM_LOCALID"], "HOROVOD_LOCAL_SIZE": str(per_node),
        "HOROVOD_CROSS_RANK": environ["SLURM_NODEID"], "HOROVOD_CROSS_SIZE": str(nodes),
        "HOROVOD_HOSTNAME": environ.get("SLURMD_NODENAME", "localhost"),
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
    }


def source_address(peer: str) -> str:
    """This host's address on its route towards ``peer`` (an IPv4 address); no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))
        return s.getsockname()[0]


def gloo_interface(peer: str) -> str:
    """The name of the network interface that holds this host's address towards ``peer`` (an IPv4 address).

    gloo binds to HOROVOD_GLOO_IFACE's address and tells the other ranks that one; without it, to what the
    hostname resolves to (127.0.1.1 on many images, which ranks on other nodes cannot reach)."""
    import psutil

    source = source_address(peer)
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == source for a in addresses):
            return name
    # a loopback address other than 127.0.0.1 (127.0.1.1) is held by lo as 127.0.0.1/8
    if ipaddress.ip_address(source).is_loopback:
        return "lo"
    raise UserError(f"no network interface holds {source}, this host's address towards the gloo rendezvous at "
                    f"{peer}: set HOROVOD_GLOO_IFACE to the interface the ranks should use")


def check_host_name_reachable() -> None:
    """Fail unless this host's name resolves to an address other nodes can reach.

    Horovod 0.28.1 binds its process sets' gloo contexts (the global one included) to that address whatever
    HOROVOD_GLOO_IFACE says, so with a name resolving to loopback the other nodes' ranks abort at the first
    connect ("connect [127.0.0.1]:N: Connection refused")."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError as err:
        raise UserError(f"host name {name!r} does not resolve ({err}): gloo ranks on several nodes need it to "
                        "resolve to this node's address (DNS or /etc/hosts)") from None
    if ipaddress.ip_address(address).is_loopback:
        raise UserError(f"host name {name!r} resolves to {address}: gloo ranks on several nodes need it to resolve "
                        "to this node's address (fix /etc/hosts or DNS, or launch with --mpi=pmix)")


@dataclass(frozen=True)
class Gpu:
    """The rank's GPU as CUDA and DALI number it (among every GPU the process sees: all of the node's under
    horovodrun and srun --gpu-bind=none) and as TensorFlow names it (a logical device: once ``init`` has
    made it the only visible GPU, TensorFlow calls it /gpu:0 whatever its number)."""

    cuda_index: int
    tf_device: str


def rank_gpu() -> Gpu | None:
    """This rank's GPU (the local rank's, as ``init`` pins it), or None on a host without GPUs."""
    import tensorflow as tf

    physical = tf.config.list_physical_devices("GPU")
    if not physical:
        return None
    mine = physical[resources.local_rank() % len(physical)]
    visible = tf.config.get_visible_devices("GPU")
    if mine not in visible:
        raise UserError(f"local rank {resources.local_rank()} trains on {mine.name}, which TensorFlow was told not "
                        f"to use (visible: {', '.join(d.name for d in visible) or 'none'})")
    return Gpu(physical.index(mine), f"/gpu:{visible.index(mine)}")


# gloo's wait for a peer (rendezvous and every collective) when no stall bound is given: a day, as NCCL and MPI
# wait (horovodrun's and Horovod's default of 30 s fails a rank whose peer's container starts slowly, or that
# waits while rank 0 writes a large checkpoint).
GLOO_WAIT = 24 * 3600


def init(stall_timeout: float | None = None) -> World:
    """Start Horovod, check that every announced rank joined, and pin this rank's GPU (local rank).

    gloo waits for a peer ``stall_timeout`` + 60 s (after the training watchdog, which names the stall), else
    GLOO_WAIT."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    if ("SLURM_PROCID" in os.environ and "HOROVOD_RANK" not in os.environ
            and "HOROVOD_GLOO_RENDEZVOUS_ADDR" in os.environ):
        os.environ.update(slurm_gloo_environment())
    if not any(name in os.environ for name in MPI_LAUNCH_VARIABLES):
        # no MPI launcher: an MPI-built Horovod would still start MPI (its default controller), which under a
        # plain srun step aborts ("direct launched using srun, but OMPI was not built with SLURM's PMI support")
        os.environ.setdefault("HOROVOD_CONTROLLER", "gloo")
        os.environ.setdefault("HOROVOD_CPU_OPERATIONS", "gloo")
    if "HOROVOD_GLOO_RENDEZVOUS_ADDR" in os.environ and not os.environ.get("HOROVOD_GLOO_IFACE"):
        os.environ["HOROVOD_GLOO_IFACE"] = gloo_interface(os.environ["HOROVOD_GLOO_RENDEZVOUS_ADDR"])
    if os.environ.get("HOROVOD_CONTROLLER") == "gloo" and int(os.environ.get("HOROVOD_CROSS_SIZE", "1")) > 1:
        check_host_name_reachable()
    os.environ["HOROVOD_GLOO_TIMEOUT_SECONDS"] = str(int(stall_timeout) + 60 if stall_timeout else GLOO_WAIT)
    gpus = tf.config.list_physical_devices("GPU")
    local_rank = resources.local_rank()
    if gpus:  # before any op runs: one GPU per rank, chosen by the local rank
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
        tf.config.experimental.set_memory_growth(gpus[local_rank % len(gpus)], True)
    hvd.init()
    announced = launcher_world_size()
    if announced and announced[0] != hvd.size():
        raise UserError(f"{announced[1]}={announced[0]} but Horovod started {hvd.size()} rank(s): this process "
                        "would train alone. Under srun use an MPI-built Horovod with --mpi=pmix (the Dockerfile's "
                        "image), or a gloo rendezvous (HOROVOD_GLOO_RENDEZVOUS_ADDR/PORT); or launch with horovodrun")
    device = f"GPU {local_rank % len(gpus)}" if gpus else "CPU"
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), device,
                 "mpi" if hvd.mpi_enabled() else "gloo")
