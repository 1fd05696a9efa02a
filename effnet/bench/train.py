"""Training benchmark: our full train step (the recipe's optimizer, L2, EMA, Horovod tape) against
keras.applications' EfficientNet-B0 with plain ``model.fit``, on the same batch.

Both run in one process, alternating in rounds so that drift of the machine's speed hits both;
the figure per side is the median over rounds, after two warm-up steps each (tracing excluded).
The batch is fixed in memory: this measures the step, not the input pipeline (``bench input``).
Our step alone per precision, batch size and rank count: ``python -m effnet benchmark train``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def _records(work: Path, size: int, batch: int) -> Path:
    from effnet.bench.input import write_images
    from effnet.data.prepare import prepare

    if not (work / "rec" / "manifest.json").exists():
        write_images(work / "images", 2 * batch)
        prepare("folders", str(work / "images"), str(work / "rec"), train_shards=1, val_shards=1, workers=1)
    return work / "rec"


def _trainer(records: Path, size: int, batch: int, amp: bool, xla: bool):
    import tensorflow as tf

    from effnet import ranks
    from effnet.config import load_config, parse_overrides
    from effnet.train import recipe
    from effnet.train.loop import Trainer

    config = load_config("config/imagenet-b0.yaml", parse_overrides([
        f"model.image_size={size}", f"train.batch_size={batch}", f"train.amp={str(amp).lower()}",
        f"train.xla={str(xla).lower()}", "model.batch_norm=plain", "data.backend=tfdata"]))
    world = ranks.init()
    precision = recipe.precision(config["train"], on_gpu=world.device != "CPU")
    if precision.jit_compile:
        tf.config.optimizer.set_jit("autoclustering")
    return Trainer(config, str(records), Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()), world,
                   precision), world


def run(args: argparse.Namespace) -> int:
    import keras
    import numpy as np
    import tensorflow as tf

    from effnet.timing import rate, time_calls

    size, batch = args.image_size, args.batch_size
    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-bench-train-"))
    trainer, world = _trainer(_records(work, size, batch), size, batch, args.amp, args.xla)
    rng = np.random.default_rng(world.rank)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, trainer.num_classes, batch).astype("int32"))
    seed = tf.constant([0, 1], tf.int64)

    def ours(count):
        for _ in range(count):
            trainer.micro_step(images, labels, seed)
            trainer.apply_step()
        trainer.step.numpy()  # wait for the last step

    sides = {"effnet train step": ours}
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3),
                                              classes=trainer.num_classes, classifier_activation=None)
    model.compile(keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    sides["keras model.fit"] = lambda count: model.fit(data, epochs=1, steps_per_epoch=count, verbose=0)
    for side in sides.values():
        side(2)  # trace and warm up
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, side in sides.items():
            rates[name].append(rate(time_calls(lambda: side(args.steps), 1), args.steps * batch))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in rates.items()), flush=True)
    medians = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\nEfficientNet-B0 training step, {size} px, batch {batch}, on {world.device}, "
          f"{trainer.precision.policy}, XLA {trainer.precision.jit_compile}, "
          f"median of {args.rounds} rounds of {args.steps} steps:")
    for name, value in medians.items():
        print(f"  {name:28s} {value:7.1f} img/s")
    print(f"  ratio effnet/keras            {medians['effnet train step'] / medians['keras model.fit']:7.3f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="our train step vs keras.applications B0 model.fit",
                              description=__doc__)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="steps per side per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on GPU; bfloat16 on a CPU with it)")
    p.add_argument("--xla", action="store_true", help="XLA auto-clustering, as train.xla (slow on CPU)")
    p.add_argument("--workdir", help="reuse this directory for the generated images and records")
    p.set_defaults(func=run)
