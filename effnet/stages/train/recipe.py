"""The reference training recipe as data-driven pieces: learning rate, optimizer, loss, L2, EMA, precision.

NVIDIA's TF2 EfficientNet recipe (DeepLearningExamples): lr = lr_init x global_batch / 128,
linear warmup then cosine to 0 (or 0.97 every 2.4 epochs, or constant), per step; RMSprop
(rho 0.9, momentum 0.9, epsilon 1e-3 inside the square root); label smoothing 0.1; L2 5e-6 on
conv and dense kernels (a ``weight_decay x sum(w^2)`` loss, as ``keras.regularizers.l2``);
EMA 0.9999 of every weight, batch-norm statistics included, with decay
min(d, (1 + step) / (10 + step)).
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from effnet.data.autoaugment import RANDAUGMENT_MAGNITUDE

REFERENCE_BATCH = 128


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then ``decay`` until ``total_steps``; from
    ``scaled_from`` on (fine-tuning: the step the backbone unfreezes at) times ``scale``."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, decay: str, steps_per_epoch: int,
                 decay_rate: float = 0.97, decay_epochs: float = 2.4, scaled_from: int = 0,
                 scale: float = 1.0) -> None:
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)
        self.decay, self.steps_per_epoch = decay, int(steps_per_epoch)
        self.decay_rate, self.decay_epochs = float(decay_rate), float(decay_epochs)
        self.scaled_from, self.scale = int(scaled_from), float(scale)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.peak * step / max(self.warmup_steps, 1)
        after = tf.maximum(step - self.warmup_steps, 0.0)
        if self.decay == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            decayed = 0.5 * self.peak * (1.0 + tf.cos(math.pi * tf.minimum(after / span, 1.0)))
        elif self.decay == "exponential":
            decayed = self.peak * self.decay_rate ** (after / (self.decay_epochs * self.steps_per_epoch))
        else:
            decayed = tf.constant(self.peak)
        lr = tf.where(step < self.warmup_steps, warmup, decayed)
        return tf.where(step < self.scaled_from, lr, lr * self.scale)

    def get_config(self) -> dict:
        return dict(peak=self.peak, warmup_steps=self.warmup_steps, total_steps=self.total_steps, decay=self.decay,
                    steps_per_epoch=self.steps_per_epoch, decay_rate=self.decay_rate, decay_epochs=self.decay_epochs,
                    scaled_from=self.scaled_from, scale=self.scale)


def schedule(train: dict, global_batch: int, steps_per_epoch: int) -> WarmupSchedule:
    """The run's learning-rate schedule by optimizer step (times ``unfrozen_lr_scale`` once a frozen
    backbone trains)."""
    return WarmupSchedule(train["lr_init"] * global_batch / REFERENCE_BATCH,
                          round(train["lr_warmup_epochs"] * steps_per_epoch), train["epochs"] * steps_per_epoch,
                          train["lr_decay"], steps_per_epoch, train["lr_decay_rate"], train["lr_decay_epochs"],
                          train["freeze_epochs"] * steps_per_epoch,
                          train["unfrozen_lr_scale"] if train["freeze_epochs"] else 1.0)


def optimizer(train: dict, mixed_float16: bool) -> keras.optimizers.Optimizer:
    """The configured optimizer (learning rate set per step by the loop), loss-scaled under float16."""
    kind = train["optimizer"]
    if kind == "rmsprop":
        opt = keras.optimizers.RMSprop(0.0, rho=train["rmsprop_rho"], momentum=train["momentum"],
                                       epsilon=train["epsilon"])
    elif kind == "sgd":
        opt = keras.optimizers.SGD(0.0, momentum=train["momentum"], nesterov=True)
    elif kind == "adam":
        opt = keras.optimizers.Adam(0.0, epsilon=train["epsilon"])
    else:
        opt = keras.optimizers.AdamW(0.0, weight_decay=train["weight_decay"], epsilon=train["epsilon"])
    return keras.optimizers.LossScaleOptimizer(opt) if mixed_float16 else opt


def decayed_kernels(model: keras.Model) -> list:
    """The conv, depthwise-conv and dense kernels: what the reference's L2 applies to (no biases, no BN)."""
    return [v for v in model.trainable_variables if v.path.rsplit("/", 1)[-1] in ("kernel", "depthwise_kernel")]


def l2_penalty(kernels: list, weight_decay: float):
    """``weight_decay x sum(w^2)`` over ``kernels`` (keras.regularizers.l2's convention), float32."""
    return weight_decay * tf.add_n([tf.reduce_sum(tf.square(tf.cast(k.value, tf.float32))) for k in kernels])


class EMA:
    """Exponential moving average of every model weight (batch-norm statistics included)."""

    def __init__(self, model: keras.Model, decay: float) -> None:
        self.decay = decay
        self.sources = list(model.weights)
        self.averages = [tf.Variable(v.value, trainable=False, name=f"ema/{v.path}") for v in self.sources]

    def update(self, step) -> None:
        """Move the averages towards the weights with decay min(d, (1 + step) / (10 + step))."""
        step = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
        for average, source in zip(self.averages, self.sources):
            average.assign(decay * average + (1.0 - decay) * tf.cast(source.value, average.dtype))

    def swap(self) -> None:
        """Exchange the model's weights and the averages (call again to swap back)."""
        for average, source in zip(self.averages, self.sources):
            kept = tf.identity(source.value)
            source.assign(average)
            average.assign(kept)


@dataclass(frozen=True)
class Precision:
    """How the run computes: Keras dtype policy, XLA, TF32."""

    policy: str
    jit_compile: bool
    tf32: bool

    @property
    def mixed_float16(self) -> bool:
        return self.policy == "mixed_float16"


# Train keys that do not change the steps a run takes (where it logs, evaluates, checkpoints, gives up).
BOOKKEEPING = ("log_every", "eval_every", "checkpoint_every", "checkpoint_every_steps", "keep_checkpoints",
               "stall_timeout")


# Train keys added after runs began, at the value that trains as before them: left out of the fingerprint there, so
# that a run begun before them resumes from its checkpoints.
LATER_KEYS = {"stages": 1, "base_image_size": None, "base_mixup_alpha": None, "base_cutmix_alpha": None,
              "base_randaug_magnitude": None, "randaug_magnitude": RANDAUGMENT_MAGNITUDE}


# What of the records' manifest decides the steps: the classes and every shard's digest (not where they came from).
RECORDS = ("label_offset", "classes", "splits")


def fingerprint(config: dict, manifest: dict | None = None, init_sha256: str | None = None) -> str:
    """sha256 of what decides a run's steps: the model and train sections, bookkeeping keys left out, the
    records trained on (``manifest``, the prepare stage's) and the starting weights' digest (``train.init_from``
    by content, not path). A checkpoint resumes only a run with the same fingerprint
    (``effnet.formats.checkpoints.latest``): new records, new starting weights or a changed key start afresh."""
    train = {k: v for k, v in config["train"].items()
             if k not in (*BOOKKEEPING, "init_from") and (k not in LATER_KEYS or v != LATER_KEYS[k])}
    records = {k: manifest[k] for k in RECORDS} if manifest else None
    decisive = {"model": config["model"], "train": train, "records": records}
    if init_sha256:  # only then: runs from a random start keep the fingerprint (and checkpoints) they had
        decisive["init"] = init_sha256
    blob = json.dumps(decisive, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX); elsewhere TF emulates it, slowly."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def amp_policy(amp: bool | str, on_gpu: bool) -> str | None:
    """The Keras mixed-precision policy ``train.amp`` means on this host, None for float32: "float16" and
    "bfloat16" are that everywhere; true is float16 on GPU, float32 on a CPU (``precision``)."""
    if amp in ("float16", "bfloat16"):
        return f"mixed_{amp}"
    return "mixed_float16" if amp and on_gpu else None


def precision(train: dict, on_gpu: bool) -> Precision:
    """The precision settings for this host (``amp_policy``).

    On a CPU, mixed bfloat16 and XLA both train EfficientNet several times slower than float32 (README has the
    measurements): both are warned about.
    """
    policy = amp_policy(train["amp"], on_gpu) or "float32"
    if train["amp"] is True and not on_gpu:
        warnings.warn("train.amp: float32 on a CPU, where mixed bfloat16 trains EfficientNet about 2x slower "
                      "(measured with and without AVX512_BF16); amp: bfloat16 forces it", stacklevel=2)
    xla = train["xla"]
    if xla is True and not on_gpu:
        warnings.warn("train.xla: XLA makes EfficientNet about 9x slower on CPU; 'auto' turns it on for GPUs only",
                      stacklevel=2)
    return Precision(policy, on_gpu if xla == "auto" else bool(xla), train["tf32"])
