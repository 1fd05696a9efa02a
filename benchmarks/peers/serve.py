"""Serving benchmark: the exported SavedModel against keras.applications' B0, and infer on a folder.

Batch-1 latency (p50/p99) and batch-N throughput of the export's ``serve_pixels`` signature
(uint8 in, preprocessing in the graph) against ``keras.applications.EfficientNetB0``'s
``model.predict`` and ``predict_on_batch`` on the same images, alternating in rounds; then
``python -m effnet infer``'s images/s on a folder of JPEGs against decoding them with PIL alone.
Random weights: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.peers.options import add_timing
from effnet.core import layout


def _export(model, size: int, directory: Path):
    """An export directory (the layout of ``effnet.formats.exported_model``) of ``model``, and the loaded SavedModel."""
    import tensorflow as tf

    from effnet.core.atomic import write_json
    from effnet.data.tfdata import EVAL_PADDING
    from effnet.stages.export import save_serving, serving_module

    save_serving(serving_module(model, size, [str(i) for i in range(1000)], 5, EVAL_PADDING),
                 directory / layout.SAVED_MODEL)
    write_json(directory / layout.EXPORT_MANIFEST, {"top_k": 5, "image_size": size})
    return tf.saved_model.load(str(directory / layout.SAVED_MODEL))


def _write_jpegs(folder: Path, count: int, size: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)  # smooth, photo-like sizes
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(paths[-1], quality=90)
    return paths


def run(args: argparse.Namespace) -> int:
    import keras
    import tensorflow as tf
    from PIL import Image

    from effnet.core.timing import latency_ms, time_calls
    from effnet.models import build_model

    size, batch = args.image_size, args.batch_size
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    many = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    keras_model = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3))
    with tempfile.TemporaryDirectory() as tmp:
        loaded = _export(build_model("efficientnet-b0", image_size=size), size, Path(tmp) / "export")
        serve = loaded.signatures["serve_pixels"]
        calls = {
            "export serve_pixels": lambda x: serve(images=tf.constant(x))["probabilities"].numpy(),
            "keras predict_on_batch": lambda x: keras_model.predict_on_batch(x.astype(np.float32)),
            "keras model.predict": lambda x: keras_model.predict(x.astype(np.float32), verbose=0),
        }
        for call in calls.values():  # trace and warm up
            call(one), call(one), call(many)
        latency = {name: [] for name in calls}
        throughput = {name: [] for name in calls}
        for r in range(args.rounds):
            for name, call in calls.items():
                latency[name] += time_calls(lambda: call(one), args.repeats)
                throughput[name] += [batch / s for s in time_calls(lambda: call(many), max(2, args.repeats // 10))]
            print(f"round {r + 1} done", flush=True)
        print(f"\nEfficientNet-B0 inference, {size} px, CPU, {args.rounds} rounds alternating:")
        print(f"  {'':24s} {'batch 1 p50':>12s} {'p99':>9s} {f'batch {batch}':>12s}")
        for name in calls:
            ms = latency_ms(latency[name])
            print(f"  {name:24s} {ms['p50']:9.2f} ms {ms['p99']:6.2f} ms "
                  f"{np.median(throughput[name]):8.1f} img/s")

        from effnet.stages import infer as infer_stage

        paths = _write_jpegs(Path(tmp) / "images", args.images, args.jpeg_size)
        start = time.perf_counter()
        for p in paths:
            with Image.open(p) as img:
                img.convert("RGB").load()
        pil = len(paths) / (time.perf_counter() - start)
        start = time.perf_counter()
        infer_stage.infer(str(Path(tmp) / "export"), [str(Path(tmp) / "images")], str(Path(tmp) / "p.csv"), 1, batch)
        rate = len(paths) / (time.perf_counter() - start)
        print(f"\ninfer on {len(paths)} JPEGs of {args.jpeg_size} px, batch {batch}: {rate:.1f} img/s "
              f"(PIL decoding alone: {pil:.1f} img/s)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="export vs keras predict latency/throughput; infer vs PIL decode",
                              description=__doc__)
    add_timing(p, rounds=3, workdir=False)
    p.add_argument("--repeats", type=int, default=30, help="batch-1 calls per model per round")
    p.add_argument("--images", type=int, default=1000, help="JPEGs for the infer measurement")
    p.add_argument("--jpeg-size", type=int, default=256)
    p.set_defaults(func=run)
