"""Accuracy from scratch on small real images available offline, ours against keras.applications + model.fit.

Datasets (written as JPEG folders at ``--image-size``, then prepared as any folders source):
- ``digits``: scikit-learn's 1797 greyscale 8x8 handwritten digits (UCI), split 80/20 per class;
- ``fashion-mnist``: Zalando's Fashion-MNIST (28x28 greyscale photos of 10 kinds of clothing) from Debian's
  ``dataset-fashion-mnist`` package, ``--per-class`` training images of each class from its training set and a
  quarter as many validation images from its test set.
Per dataset and seed, every side trains for the same epochs, batch and image size: our train stage with
``--config`` (default config/small-images.yaml; tf.data input, no index stage), and keras.applications'
EfficientNetB0 with plain ``model.fit`` on the images centre-cropped as our evaluation does, with Adam 1e-3 and
with RMSprop 1e-3 (rho 0.9, momentum 0.9, epsilon 1e-3) + label smoothing 0.1. Prints every run's validation
top-1 and whole-process wall time, then mean and standard deviation per side. Needs scikit-learn for the digits
(the ``bench`` extra: ``pip install -c requirements/constraints.txt -e '.[bench]'``), used by no stage.
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.peers.options import add_timing
from benchmarks.peers.seeds import REPO, compare, prepared, timed, train_ours

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
# keras.applications B0 + model.fit: (optimizer, label smoothing) per peer
PEERS = {"keras-adam": ("adam", 0.0), "keras-rmsprop-ls": ("rmsprop", 0.1)}


def _save(folder: Path, name: str, pixels: np.ndarray, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BILINEAR).save(folder / name, quality=95)


def write_digits(root: Path, size: int, seed: int = 0, train_per_class: int | None = None) -> None:
    """The digits as ``root/{train,val}/<digit>/*.jpg`` (80/20 per class; the first ``train_per_class`` of the
    80 when given), upscaled to ``size`` px."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        cut = int(0.8 * len(indices))
        for split, part in (("train", indices[:cut][:train_per_class]), ("val", indices[cut:])):
            for i in part:
                _save(root / split / str(label), f"{i:04d}.jpg", (digits.images[i] * (255 / 16)).astype(np.uint8),
                      size)


def _idx(path: Path) -> np.ndarray:
    """An IDX file's array (images n x h x w, or labels n)."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_fashion_mnist(root: Path, size: int, per_class: int) -> None:
    """``per_class`` training images per class from Fashion-MNIST's training set and ``per_class // 4`` from its
    test set, as ``root/{train,val}/<class>/*.jpg`` at ``size`` px."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"fashion-mnist: {FASHION_MNIST} has no IDX files: apt-get install dataset-fashion-mnist")
    for split, prefix, count in (("train", "train", per_class), ("val", "t10k", max(1, per_class // 4))):
        images = _idx(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz")
        labels = _idx(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz")
        for label, name in enumerate(FASHION_CLASSES):
            for i in np.flatnonzero(labels == label)[:count]:
                _save(root / split / name, f"{i:05d}.jpg", images[i], size)


def keras_fit(records: Path, size: int, batch: int, epochs: int, crop_padding: int, optimizer: str,
              smoothing: float, seed: int) -> float:
    """Validation top-1 of keras.applications' B0 trained from scratch with plain ``model.fit`` on the images
    centre-cropped as our evaluation does."""
    import keras

    from effnet.data import build_dataset

    def arrays(split):
        batches = build_dataset(records, split, batch_size=1, image_size=size, training=False,
                                crop_padding=crop_padding)
        images, labels = zip(*((x.numpy()[0], y.numpy()[0]) for x, y in batches))
        return np.stack(images), np.array(labels)

    keras.utils.set_random_seed(seed)
    (x, y), (vx, vy) = arrays("train"), arrays("validation")
    classes = int(max(y.max(), vy.max())) + 1
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3), classes=classes)
    opt = (keras.optimizers.Adam(1e-3) if optimizer == "adam" else
           keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9, epsilon=1e-3))
    model.compile(opt, keras.losses.CategoricalCrossentropy(label_smoothing=smoothing))
    model.fit(x, keras.utils.to_categorical(y, classes), batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return float(np.mean(model.predict(vx, verbose=0).argmax(1) == vy))


def _writer(dataset: str, args: argparse.Namespace) -> Callable[[Path], None]:
    if dataset == "digits":
        return lambda root: write_digits(root, args.image_size)
    return lambda root: write_fashion_mnist(root, args.image_size, args.per_class)


def run(args: argparse.Namespace) -> int:
    from effnet.core.config import load_config

    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-accuracy-"))
    size, batch, epochs = args.image_size, args.batch_size, args.epochs
    sets = [f"model.image_size={size}", f"train.batch_size={batch}", f"train.epochs={epochs}",
            f"train.eval_every={epochs}", f"train.log_every={10 ** 6}", "data.backend=tfdata"] + args.set
    crop_padding = load_config(args.config)["model"]["crop_padding"]
    for dataset in args.datasets:
        records = prepared(work, dataset, _writer(dataset, args))

        def ours(seed: int, records=records, dataset=dataset) -> tuple[float, float]:
            return train_ours(args.config, records, work / f"{dataset}-ours-seed{seed}-{time.time_ns()}",
                              sets + [f"train.seed={seed}"])

        def peer(name: str, records=records):
            def fit(seed: int) -> tuple[float, float]:
                printed, wall = timed([sys.executable, "-m", "benchmarks.peers", "keras-fit", name, str(records),
                                       "--image-size", str(size), "--batch-size", str(batch), "--epochs", str(epochs),
                                       "--crop-padding", str(crop_padding), "--seed", str(seed)])
                return float(printed.split()[-1]), wall
            return fit

        compare(args.seeds, {"ours": ours, **{name: peer(name) for name in PEERS}},
                f"{dataset}, {size} px, batch {batch}, {epochs} epochs, from scratch (whole processes)")
    return 0


def run_keras_fit(args: argparse.Namespace) -> int:
    optimizer, smoothing = PEERS[args.peer]
    top1 = keras_fit(Path(args.records), args.image_size, args.batch_size, args.epochs, args.crop_padding,
                     optimizer, smoothing, args.seed)
    print(f"top1 {top1}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("accuracy", help="ours vs keras B0 + model.fit from scratch on real small images, "
                                               "N seeds", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing(p, image_size=32, batch_size=64, rounds=None)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--datasets", nargs="+", choices=("digits", "fashion-mnist"), default=["digits", "fashion-mnist"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=300, help="fashion-mnist: training images per class")
    p.add_argument("--config", default=str(REPO / "config/small-images.yaml"), help="our side's config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for our side")
    p.set_defaults(func=run)
    k = subparsers.add_parser("keras-fit", help="one peer run of the accuracy comparison (prints its top-1)")
    k.add_argument("peer", choices=sorted(PEERS))
    k.add_argument("records", help="a prepared TFRecord directory")
    add_timing(k, image_size=32, batch_size=64, rounds=None, workdir=False)
    k.add_argument("--epochs", type=int, default=15)
    k.add_argument("--crop-padding", type=int, required=True, help="our evaluation's centre crop padding")
    k.add_argument("--seed", type=int, default=0)
    k.set_defaults(func=run_keras_fit)
