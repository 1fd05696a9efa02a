"""The GPU branch of ranks.init and the names of a rank's GPU, run here with TensorFlow's device list stubbed:
four GPUs (horovodrun, srun --gpu-bind=none) or the one a binding srun leaves a task."""
import pytest
import tensorflow as tf

from effnet import ranks
from effnet.errors import UserError


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
