"""The GPU branch of ranks.init and the names of a rank's GPU, run here with TensorFlow's device list stubbed:
four GPUs (horovodrun, srun --gpu-bind=none) or the one a binding srun leaves a task."""
import os
import socket

import psutil
import pytest
import tensorflow as tf

from effnet.core import ranks
from effnet.core.errors import UserError


@pytest.fixture
def gpus(monkeypatch):
    """(install, calls): install(count, local_rank) stubs tf.config with that many physical GPUs; calls records
    what init asked of it."""
    calls = {"visible": [], "growth": []}

    def install(count: int, local_rank: int):
        physical = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(count)]
        calls["visible"] = list(physical)
        monkeypatch.setenv("SLURM_LOCALID", str(local_rank))
        for name in ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: list(physical) if kind == "GPU" else [])
        monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: list(calls["visible"]))
        monkeypatch.setattr(tf.config, "set_visible_devices",
                            lambda devices, kind=None: calls.update(visible=[devices]))
        monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                            lambda device, on: calls["growth"].append((device.name, on)))
        return physical

    monkeypatch.setenv("HOROVOD_GLOO_TIMEOUT_SECONDS", "0")  # init sets it; restored afterwards
    return install, calls


def test_init_pins_the_local_ranks_gpu_which_tensorflow_then_calls_gpu_0(gpus):
    install, calls = gpus
    physical = install(4, local_rank=2)
    assert ranks.rank_gpu() == ranks.Gpu(cuda_index=2, tf_device="/gpu:2")  # before pinning: all visible
    world = ranks.init()
    assert world.device == "GPU 2" and world.size == 1
    assert calls["visible"] == [physical[2]] and calls["growth"] == [("/physical_device:GPU:2", True)]
    # DALI (CUDA) still counts all four; TensorFlow sees one, its /gpu:0
    assert ranks.rank_gpu() == ranks.Gpu(cuda_index=2, tf_device="/gpu:0")


def test_a_task_bound_to_one_gpu_uses_index_0_for_both(gpus):
    install, _ = gpus
    install(1, local_rank=3)
    assert ranks.init().device == "GPU 0"
    assert ranks.rank_gpu() == ranks.Gpu(cuda_index=0, tf_device="/gpu:0")


def test_a_gpu_tensorflow_was_told_not_to_use_is_named(gpus):
    install, calls = gpus
    physical = install(2, local_rank=1)
    calls["visible"] = [physical[0]]
    with pytest.raises(UserError, match="local rank 1 trains on /physical_device:GPU:1, which TensorFlow was told "
                                        "not to use \\(visible: /physical_device:GPU:0\\)"):
        ranks.rank_gpu()


def test_no_gpu_means_the_cpu(gpus):
    install, calls = gpus
    install(0, local_rank=0)
    assert ranks.rank_gpu() is None and ranks.init().device == "CPU" and calls["growth"] == []


def test_without_an_mpi_launcher_horovod_runs_gloo_whatever_it_was_built_with(gpus, monkeypatch):
    """An MPI-built Horovod defaults to its MPI controller, which in a plain srun step (no PMI) aborts the
    process: only an MPI launcher's variables select it."""
    install, _ = gpus
    install(0, local_rank=0)
    for name in ("HOROVOD_CONTROLLER", "HOROVOD_CPU_OPERATIONS", *ranks.MPI_LAUNCH_VARIABLES):
        monkeypatch.setenv(name, "")  # restored afterwards
        monkeypatch.delenv(name)
    assert ranks.init().controller == "gloo"
    assert (os.environ["HOROVOD_CONTROLLER"], os.environ["HOROVOD_CPU_OPERATIONS"]) == ("gloo", "gloo")


def test_gloo_binds_to_the_interface_that_holds_the_address_towards_the_rendezvous():
    assert ranks.gloo_interface("127.0.0.1") == "lo"
    addresses = {a.address: name for name, found in psutil.net_if_addrs().items() for a in found
                 if a.family == socket.AF_INET and not a.address.startswith("127.")}
    for address, name in addresses.items():  # towards one of its own addresses a host routes from that address
        assert ranks.gloo_interface(address) == name


def test_gloo_across_nodes_needs_a_host_name_other_nodes_can_reach(monkeypatch):
    """Horovod's process-set gloo contexts bind to the host name's address (HOROVOD_GLOO_IFACE aside)."""
    monkeypatch.setattr(socket, "gethostname", lambda: "localhost")
    with pytest.raises(UserError, match="'localhost' resolves to 127.0.0.1"):
        ranks.check_host_name_reachable()
    monkeypatch.setattr(socket, "gethostname", lambda: "no-such-host.invalid")
    with pytest.raises(UserError, match="'no-such-host.invalid' does not resolve"):
        ranks.check_host_name_reachable()
