"""Accuracy benchmark on a small real dataset available offline: scikit-learn's handwritten digits.

1797 greyscale 8x8 digits (UCI), split 80/20 per class, written as JPEGs at ``--image-size``, then
trained from scratch for the same epochs, batch and image size by (a) our train stage (the demo
recipe) and (b) ``keras.applications.EfficientNetB0`` with Adam 1e-3 and plain ``model.fit`` on
the centre-cropped images. Prints validation top-1 and wall time of both. Needs scikit-learn
(``pip install scikit-learn``), used by no stage.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from effnet.benchmark.peers.options import add_timing


def write_digits(root: Path, size: int, seed: int = 0) -> None:
    """The digits as ``root/{train,val}/<digit>/*.jpg`` (80/20 per class), upscaled to ``size`` px."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        cut = int(0.8 * len(indices))
        for split, part in (("train", indices[:cut]), ("val", indices[cut:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            for i in part:
                pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
                Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BILINEAR).save(
                    folder / f"{i:04d}.jpg", quality=95)


def keras_baseline(records: Path, size: int, batch: int, epochs: int, crop_padding: int) -> tuple[float, float]:
    """Top-1 and training wall seconds of keras.applications' B0 with Adam 1e-3 and model.fit on the
    images centre-cropped as our evaluation does."""
    import keras

    from effnet.data import build_dataset

    def arrays(split):
        batches = build_dataset(records, split, batch_size=1, image_size=size, training=False,
                                crop_padding=crop_padding)
        images, labels = zip(*((x.numpy()[0], y.numpy()[0]) for x, y in batches))
        return np.stack(images), np.array(labels)

    (x, y), (vx, vy) = arrays("train"), arrays("validation")
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3), classes=10)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    wall = time.perf_counter() - start
    return float(np.mean(model.predict(vx, verbose=0).argmax(1) == vy)), wall


def run(args: argparse.Namespace) -> int:
    from effnet.data.prepare import prepare

    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-accuracy-"))
    size, batch, epochs = args.image_size, args.batch_size, args.epochs
    if not (work / "rec" / "manifest.json").exists():
        write_digits(work / "images", size)
        prepare("folders", str(work / "images"), str(work / "rec"), train_shards=2, val_shards=1, workers=1)
    sets = [f"model.image_size={size}", f"train.batch_size={batch}", f"train.epochs={epochs}",
            f"train.eval_every={epochs}", f"train.log_every={10 ** 6}"] + args.set
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "effnet", "train", "--data", str(work / "rec"), "--output",
                    str(work / f"run-{time.time_ns()}"), *(a for s in sets for a in ("--set", s))], check=True,
                   stdout=subprocess.DEVNULL)
    ours_wall = time.perf_counter() - start
    summary = json.loads(max(work.glob("run-*/train_summary.json"), key=lambda p: p.stat().st_mtime).read_text())
    theirs, theirs_wall = keras_baseline(work / "rec", size, batch, epochs, summary["crop_padding"])
    print(f"\nDigits (real handwriting, 80/20 split), {size} px, batch {batch}, {epochs} epochs, from scratch:")
    print(f"  effnet train (config/config.yaml recipe)   top-1 {summary['eval']['top1']:.3f}   "
          f"wall {ours_wall:6.1f} s (training loop {summary['wall_seconds']:.1f} s)")
    print(f"  keras.applications B0, Adam 1e-3, fit      top-1 {theirs:.3f}   wall {theirs_wall:6.1f} s (fit only)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("accuracy", help="our recipe vs keras B0 + model.fit on real digits, from scratch",
                              description=__doc__)
    add_timing(p, image_size=32, rounds=None)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for our side")
    p.set_defaults(func=run)
