"""The B0 training step against keras.applications' EfficientNet-B0, on the same batch, and FLOPs.

Four sides in one process, alternating in rounds (the median over rounds per side, after two warm-up steps
each, tracing excluded): each model's bare forward + backward (gradients of the cross-entropy on logits),
our full train step (the recipe's optimizer, L2, EMA, Horovod tape) and keras.applications' B0 with plain
``model.fit``. The batch is fixed in memory: this measures the step, not the input pipeline (``input``).
Our step alone per precision, batch size and rank count: ``python -m effnet benchmark train``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.peers.options import add_timing
from effnet.core import layout


def _records(work: Path, size: int, batch: int) -> Path:
    from benchmarks.peers.input import write_images
    from effnet.stages.prepare import prepare

    if not (work / "rec" / layout.RECORDS_MANIFEST).exists():
        write_images(work / "images", 2 * batch)
        prepare("folders", str(work / "images"), str(work / "rec"), train_shards=1, val_shards=1, workers=1)
    return work / "rec"


def _trainer(records: Path, size: int, batch: int, amp: bool, xla: bool):
    """Our Trainer on ``records`` (its precision becomes the process's: every model built after it uses it)."""
    import tensorflow as tf

    from effnet.core import ranks
    from effnet.core.config import load_config, parse_overrides
    from effnet.stages.train import recipe
    from effnet.stages.train.loop import Trainer

    config = load_config("config/imagenet-b0.yaml", parse_overrides([
        f"model.image_size={size}", f"train.batch_size={batch}", f"train.amp={str(amp).lower()}",
        f"train.xla={str(xla).lower()}", "model.batch_norm=plain", "data.backend=tfdata"]))
    world = ranks.init()
    precision = recipe.precision(config["train"], on_gpu=world.device != "CPU")
    if precision.jit_compile:
        tf.config.optimizer.set_jit("autoclustering")
    return Trainer(config, str(records), Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()), world,
                   precision), world


def _grad_step(model):
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return step


def forward_flops(model) -> int:
    """Floating-point operations of one inference forward pass for a single image (TF profiler)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(
        tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)))
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops


def run(args: argparse.Namespace) -> int:
    import keras
    import numpy as np
    import tensorflow as tf

    from effnet.models import build_model

    size, batch = args.image_size, args.batch_size
    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-step-"))
    trainer, world = _trainer(_records(work, size, batch), size, batch, args.amp, args.xla)
    rng = np.random.default_rng(world.rank)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, trainer.num_classes, batch).astype("int32"))
    seed = tf.constant([0, 1], tf.int64)

    def ours(count):
        for _ in range(count):
            trainer.train_step(images, labels, seed)
        trainer.completed_step()  # wait for the last step

    def bare(model):
        step = _grad_step(model)

        def side(count):
            for _ in range(count):
                grads = step(images, labels)
            grads[0].numpy()  # wait for the last step's gradients

        return side

    keras_b0 = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3),
                                                 classes=trainer.num_classes, classifier_activation=None)
    fitted = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3),
                                               classes=trainer.num_classes, classifier_activation=None)
    fitted.compile(keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    sides = {
        "effnet forward+backward": bare(build_model("efficientnet-b0", num_classes=trainer.num_classes,
                                                     image_size=size)),
        "keras forward+backward": bare(keras_b0),
        "effnet train step": ours,
        "keras model.fit": lambda count: fitted.fit(data, epochs=1, steps_per_epoch=count, verbose=0),
    }
    medians = _median_rates(sides, args.rounds, args.steps, batch)
    print(f"\nEfficientNet-B0, {size} px, batch {batch}, on {world.device}, {trainer.precision.policy}, "
          f"XLA {trainer.precision.jit_compile}, median of {args.rounds} rounds of {args.steps} steps:")
    for name, value in medians.items():
        print(f"  {name:28s} {value:7.1f} img/s")
    for what, ours_side, theirs in (("forward+backward", "effnet forward+backward", "keras forward+backward"),
                                    ("train step / model.fit", "effnet train step", "keras model.fit")):
        print(f"  ratio effnet/keras, {what:22s} {medians[ours_side] / medians[theirs]:6.3f}")
    flops = forward_flops(build_model("efficientnet-b0"))
    print(f"  FLOPs per 224 px image (forward): {flops / 1e9:.3f} G = {flops / 2e9:.3f} G multiply-adds "
          "(published: 0.39 G)")
    return 0


def _median_rates(sides: dict, rounds: int, steps: int, batch: int) -> dict[str, float]:
    """Each side's median img/s over ``rounds`` that time every side in turn (``steps`` steps each), after a
    warm-up; each round's figures printed."""
    from effnet.core.timing import rate, time_calls

    for side in sides.values():
        side(2)  # trace and warm up
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, side in sides.items():
            rates[name].append(rate(time_calls(lambda: side(steps), 1), steps * batch))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in rates.items()) + " img/s", flush=True)
    return {name: statistics.median(v) for name, v in rates.items()}


def register(subparsers) -> None:
    p = subparsers.add_parser("step", help="B0 training step (bare and full) vs keras.applications, and FLOPs",
                              description=__doc__)
    add_timing(p, steps=5)
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on GPU; bfloat16 on a CPU with it)")
    p.add_argument("--xla", action="store_true", help="XLA auto-clustering, as train.xla (slow on CPU)")
    p.set_defaults(func=run)
