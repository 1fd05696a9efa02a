"""Model benchmark: training-step throughput of our B0 against keras.applications' B0, and FLOPs.

Both models run forward + backward (gradients of the cross-entropy on logits) in a
tf.function, in the same process, alternating in rounds so that drift of the machine's
speed hits both; the figure per model is the median over rounds.
"""
from __future__ import annotations

import argparse
import statistics


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

    from effnet.models import build_model
    from effnet.timing import rate, time_calls

    size, batch = args.image_size, args.batch_size
    models = {
        "effnet": build_model("efficientnet-b0", image_size=size),
        "keras.applications": keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3),
                                                                classifier_activation=None),
    }
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, batch)
    steps = {name: _grad_step(m) for name, m in models.items()}
    for step in steps.values():  # trace and warm up
        step(images, labels)
        step(images, labels)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        for name, step in steps.items():
            # each step to its gradients on the host
            rates[name].append(rate(time_calls(lambda: step(images, labels)[0].numpy(), args.steps), batch))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in rates.items()), flush=True)
    ours, theirs = (statistics.median(rates[n]) for n in models)
    print(f"\nEfficientNet-B0 forward+backward, {size} px, batch {batch}, median of {args.rounds} rounds:")
    print(f"  effnet               {ours:7.1f} img/s")
    print(f"  keras.applications   {theirs:7.1f} img/s")
    print(f"  ratio effnet/keras   {ours / theirs:7.3f}")
    flops = forward_flops(build_model("efficientnet-b0"))
    print(f"  FLOPs per 224 px image (forward): {flops / 1e9:.3f} G = {flops / 2e9:.3f} G multiply-adds "
          "(published: 0.39 G)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="B0 training-step img/s vs keras.applications, and FLOPs",
                              description=__doc__)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="steps per model per round")
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(func=run)
