"""The precisions a benchmark measures, by the reference's names, and which this host can run.

- ``fp32``: float32, TF32 off;
- ``tf32``: float32 with TensorFloat-32 matmuls/convolutions: Ampere or newer GPUs only;
- ``amp``: mixed precision, float16 with loss scaling on GPU, bfloat16 on a CPU with native
  bfloat16 (training's ``amp: true`` stays float32 on a CPU, where bfloat16 was measured 2x slower: this row
  shows it on yours; emulated bfloat16 is not measured); train.amp float16 or bfloat16 makes it that one on
  any device.
XLA follows train.xla (auto: on for GPUs only).
"""
from __future__ import annotations

from effnet.stages.train.recipe import Precision, amp_policy, cpu_has_native_bf16

NAMES = ("fp32", "tf32", "amp")


def gpu_compute_capability() -> tuple[int, int] | None:
    """The first visible GPU's compute capability; None without a GPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))


def resolve(name: str, train: dict) -> Precision | str:
    """The Precision that ``name`` means on this host under the config's ``train`` section (xla, amp), or
    why this host cannot run it."""
    capability = gpu_compute_capability()
    on_gpu = capability is not None
    jit = on_gpu if train["xla"] == "auto" else bool(train["xla"])
    if name == "fp32":
        return Precision("float32", jit, tf32=False)
    if name == "tf32":
        if not on_gpu:
            return "TF32 needs a GPU (Ampere or newer)"
        if capability < (8, 0):
            return f"TF32 needs an Ampere or newer GPU (compute capability {capability[0]}.{capability[1]} here)"
        return Precision("float32", jit, tf32=True)
    if name == "amp":
        named = train["amp"] if isinstance(train["amp"], str) else None
        if named or on_gpu:
            return Precision(amp_policy(named or True, on_gpu), jit, tf32=on_gpu)
        if not cpu_has_native_bf16():
            return "this CPU has no native bfloat16 (AVX512_BF16/AMX): emulated, it is slower than float32"
        return Precision("mixed_bfloat16", jit, tf32=False)
    raise ValueError(f"unknown precision {name!r}: one of {', '.join(NAMES)}")


def runnable(config: dict, log):
    """Each of benchmark.precisions this host can run, made the process's, as (name, Precision); the others
    are logged to ``log`` (a DLLogger) as skipped, with the reason."""
    for name in config["benchmark"]["precisions"]:
        precision = resolve(name, config["train"])
        if isinstance(precision, str):
            log.log("PARAMETER", {"precision": name, "skipped": precision})
            continue
        apply(precision)
        yield name, precision


def apply(precision: Precision) -> None:
    """Make ``precision`` the process's: dtype policy, TF32 and XLA auto-clustering."""
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(precision.policy)
    tf.config.experimental.enable_tensor_float_32_execution(precision.tf32)
    tf.config.optimizer.set_jit("autoclustering" if precision.jit_compile else False)
