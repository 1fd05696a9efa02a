"""Input-pipeline benchmark: CPU milliseconds per image and images/s of each training pipeline option.

Writes realistic JPEGs (about 400x350 px, about 80 KB: smooth colour fields with texture and
noise), prepares them, then measures, alternating in rounds: a straightforward
baseline (TFRecordDataset -> parse -> decode_and_crop_jpeg -> resize -> flip, parallel map),
our tf.data path plain / with AutoAugment / with RandAugment, and DALI on the CPU.
CPU time is the process's user+system time (all threads) per image delivered.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.peers.options import add_timing
from effnet.core import layout


def write_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs of about 400x350 px and 80 KB in a folders layout with two classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", count), ("val", 4)):
        for i in range(n):
            folder = root / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = int(rng.integers(330, 370)), int(rng.integers(380, 420))
            small = rng.uniform(0, 255, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
            base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
            texture = np.sin(np.arange(w)[None, :, None] * rng.uniform(0.05, 0.5)) * rng.uniform(10, 40)
            pixels = np.clip(base + texture + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=int(rng.integers(85, 93)))


def baseline(files: list[str], batch_size: int, image_size: int):
    """The straightforward pipeline our plain tf.data path must not cost more CPU than."""
    import tensorflow as tf

    def load(record):
        encoded = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature((), tf.string)})[
            "image/encoded"]
        shape = tf.io.extract_jpeg_shape(encoded)
        side = tf.minimum(shape[0], shape[1])
        window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])
        image = tf.image.resize(tf.io.decode_and_crop_jpeg(encoded, window, channels=3), [image_size, image_size])
        return tf.image.random_flip_left_right(image)

    ds = tf.data.TFRecordDataset(files).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(make) -> tuple[float, float]:
    """(CPU ms per image, images per second) over one pass of the dataset ``make()`` returns."""
    ds = make()
    cpu0, wall0, n = time.process_time(), time.perf_counter(), 0
    for batch in ds:
        n += int(batch[0].shape[0]) if isinstance(batch, tuple) else int(batch.shape[0])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return 1000 * cpu / n, n / wall


def run(args: argparse.Namespace) -> int:
    from effnet.data import build_dataset
    from effnet.stages.index import build_indexes
    from effnet.stages.prepare import prepare

    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-input-"))
    if not (work / "rec" / layout.RECORDS_MANIFEST).exists():
        write_images(work / "images", args.images)
        prepare("folders", str(work / "images"), str(work / "rec"), train_shards=4, val_shards=1)
        build_indexes(work / "rec", work / layout.INDEX)  # what the DALI backend reads the shards through
    files = sorted(str(p) for p in (work / "rec").glob("train-*"))
    jpeg_kb = statistics.mean(p.stat().st_size for p in (work / "images" / "train").rglob("*.jpg")) / 1024
    size, batch = args.image_size, args.batch_size

    def ours(backend, augment=None):
        return lambda: build_dataset(work / "rec", "train", backend=backend, batch_size=batch, image_size=size,
                                     augment=augment, gpu=None)

    options = {
        "baseline tf.data": lambda: baseline(files, batch, size),
        "tf.data plain": ours("tfdata"),
        "tf.data + AutoAugment": ours("tfdata", "autoaugment"),
        "tf.data + RandAugment": ours("tfdata", "randaugment"),
        "DALI CPU plain": ours("dali"),
        "DALI CPU + AutoAugment": ours("dali", "autoaugment"),
    }
    for make in options.values():  # warm up: trace graphs, build pipelines
        measure(make)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in options}
    for r in range(args.rounds):
        for name, make in options.items():
            results[name].append(measure(make))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\nTraining input, {size} px, batch {batch}, {args.images} JPEGs of about {jpeg_kb:.0f} KB, "
          f"median of {args.rounds} rounds:")
    print(f"  {'pipeline':26s} {'CPU ms/img':>10s} {'img/s':>8s}")
    for name, values in results.items():
        cpu = statistics.median(v[0] for v in values)
        rate = statistics.median(v[1] for v in values)
        print(f"  {name:26s} {cpu:10.2f} {rate:8.1f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("input", help="CPU ms/image and img/s of the input pipeline options",
                              description=__doc__)
    add_timing(p, rounds=3)
    p.add_argument("--images", type=int, default=512)
    p.set_defaults(func=run)
