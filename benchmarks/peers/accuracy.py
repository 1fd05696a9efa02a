"""Accuracy from scratch on small real images available offline, ours against keras.applications + model.fit.

Datasets (written as JPEG folders at ``--image-size``, then prepared as any folders source):
- ``digits``: scikit-learn's 1797 greyscale 8x8 handwritten digits (UCI), split 80/20 per class;
- ``fashion-mnist``: Zalando's Fashion-MNIST (28x28 greyscale photos of 10 kinds of clothing) from Debian's
  ``dataset-fashion-mnist`` package, ``--per-class`` training images of each class from its training set and a
  quarter as many validation images from its test set.
Per dataset and seed, every side trains for the same epochs, batch and image size: our train stage with
``--config`` (default config/small-images.yaml as shipped: its DALI input; float32 on a CPU), and keras.applications'
EfficientNetB0 with plain ``model.fit`` on the images centre-cropped as our evaluation does (``PEERS``): Adam;
RMSprop (rho 0.9, momentum 0.9, epsilon 1e-3) + label smoothing 0.1; the same with the augmentation Keras' own
small-image examples use (random horizontal flips, random translation by up to 1/8 of the side); and that with
every BatchNormalization's momentum set to 0.9 before compiling (keras' B0 keeps 0.99).
A fair budget of choices: each side's learning rate is picked per dataset from its base value times each of
``--lr-factors`` (0.5, 1, 2) by seed 0 on a validation split carved from the training images (a sixth of each
class; never the evaluation images), then fixed for every seed. Prints every run (the picking ones too) with its
validation top-1 and whole-process wall time, then mean and standard deviation per side. Needs scikit-learn for the
digits (the ``bench`` extra: ``pip install -c requirements/constraints.txt -e '.[bench]'``), used by no stage.
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.peers.options import add_timing
from benchmarks.peers.seeds import REPO, compare, prepared, timed, train_ours

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
LR_FACTORS = (0.5, 1.0, 2.0)
KERAS_LR = 1e-3  # the base learning rate of every keras side (keras' default for Adam and RMSprop)
TUNE_SHARE = 6  # the picking runs validate on a sixth of each class's training images


@dataclass(frozen=True)
class Peer:
    """keras.applications B0 + model.fit, as a practitioner writes it."""

    optimizer: str  # "adam" or "rmsprop" (rho 0.9, momentum 0.9, epsilon 1e-3)
    smoothing: float = 0.0
    augment: bool = False  # random horizontal flips + random translation by up to 1/8 of the side
    bn_momentum: float | None = None  # None: keras' 0.99


PEERS = {"keras-adam": Peer("adam"), "keras-rmsprop-ls": Peer("rmsprop", 0.1),
         "keras-flip-shift": Peer("rmsprop", 0.1, augment=True),
         "keras-flip-shift-bn0.9": Peer("rmsprop", 0.1, augment=True, bn_momentum=0.9)}


def _save(folder: Path, name: str, pixels: np.ndarray, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BILINEAR).save(folder / name, quality=95)


def _carve(train: np.ndarray, held_out: np.ndarray, tune: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: as given, or for picking runs the last TUNE_SHARE-th of ``train`` as val."""
    if not tune:
        return train, held_out
    cut = len(train) - max(1, len(train) // TUNE_SHARE)
    return train[:cut], train[cut:]


def write_digits(root: Path, size: int, seed: int = 0, train_per_class: int | None = None,
                 tune: bool = False) -> None:
    """The digits as ``root/{train,val}/<digit>/*.jpg`` (80/20 per class; the first ``train_per_class`` of the
    80 when given; with ``tune`` the val images carved from those), upscaled to ``size`` px."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        cut = int(0.8 * len(indices))
        train, val = _carve(indices[:cut][:train_per_class], indices[cut:], tune)
        for split, part in (("train", train), ("val", val)):
            for i in part:
                _save(root / split / str(label), f"{i:04d}.jpg", (digits.images[i] * (255 / 16)).astype(np.uint8),
                      size)


def _idx(path: Path) -> np.ndarray:
    """An IDX file's array (images n x h x w, or labels n)."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_fashion_mnist(root: Path, size: int, per_class: int, tune: bool = False) -> None:
    """``per_class`` training images per class from Fashion-MNIST's training set and ``per_class // 4`` from its
    test set (with ``tune`` a sixth of the training images instead), as ``root/{train,val}/<class>/*.jpg`` at
    ``size`` px."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"fashion-mnist: {FASHION_MNIST} has no IDX files: apt-get install dataset-fashion-mnist")
    train_images, train_labels, test_images, test_labels = (
        _idx(FASHION_MNIST / f"{prefix}-{kind}-idx{dims}-ubyte.gz")
        for prefix in ("train", "t10k") for kind, dims in (("images", 3), ("labels", 1)))
    for label, name in enumerate(FASHION_CLASSES):
        train, val = _carve(np.flatnonzero(train_labels == label)[:per_class],
                            np.flatnonzero(test_labels == label)[:max(1, per_class // 4)], tune)
        for split, images, part in (("train", train_images, train), ("val", train_images if tune else test_images,
                                                                      val)):
            for i in part:
                _save(root / split / name, f"{i:05d}.jpg", images[i], size)


def keras_fit(records: Path, size: int, batch: int, epochs: int, crop_padding: int, peer: Peer, lr: float,
              seed: int) -> float:
    """Validation top-1 of keras.applications' B0 trained from scratch with plain ``model.fit`` on the images
    centre-cropped as our evaluation does, as ``peer`` writes it, at learning rate ``lr``."""
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
    if peer.bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = peer.bn_momentum
    if peer.augment:  # active in fit only, as Keras' examples put them in front of the model
        model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.RandomFlip("horizontal"),
                                  keras.layers.RandomTranslation(1 / 8, 1 / 8), model])
    opt = (keras.optimizers.Adam(lr) if peer.optimizer == "adam" else
           keras.optimizers.RMSprop(lr, rho=0.9, momentum=0.9, epsilon=1e-3))
    model.compile(opt, keras.losses.CategoricalCrossentropy(label_smoothing=peer.smoothing))
    model.fit(x, keras.utils.to_categorical(y, classes), batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return float(np.mean(model.predict(vx, verbose=0).argmax(1) == vy))


def _writer(dataset: str, args: argparse.Namespace, tune: bool) -> Callable[[Path], None]:
    if dataset == "digits":
        return lambda root: write_digits(root, args.image_size, train_per_class=args.per_class, tune=tune)
    return lambda root: write_fashion_mnist(root, args.image_size, args.per_class or 600, tune)


def run(args: argparse.Namespace) -> int:
    from effnet.core.config import load_config, parse_overrides

    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-accuracy-"))
    size, batch, epochs = args.image_size, args.batch_size, args.epochs
    sets = [f"model.image_size={size}", f"train.batch_size={batch}", f"train.epochs={epochs}",
            f"train.eval_every={epochs}", f"train.log_every={10 ** 6}"] + args.set
    config = load_config(args.config, parse_overrides(args.set))
    base = {"ours": config["train"]["lr_init"], **dict.fromkeys(PEERS, KERAS_LR)}

    def side(name: str, records: Path, lr: float) -> Callable[[int], tuple[float, float]]:
        """seed -> (top-1, wall seconds) of side ``name`` on ``records`` at learning rate ``lr``."""
        def ours(seed: int) -> tuple[float, float]:
            return train_ours(args.config, records, work / f"{records.name}-ours-seed{seed}-{time.time_ns()}",
                              sets + [f"train.lr_init={lr}", f"train.seed={seed}"])

        def peer(seed: int) -> tuple[float, float]:
            printed, wall = timed([sys.executable, "-m", "benchmarks.peers", "keras-fit", name, str(records),
                                   "--image-size", str(size), "--batch-size", str(batch), "--epochs", str(epochs),
                                   "--crop-padding", str(config["model"]["crop_padding"]), "--lr", str(lr),
                                   "--seed", str(seed)])
            return float(printed.split()[-1]), wall
        return ours if name == "ours" else peer

    for dataset in args.datasets:
        name = f"{dataset}-{size}px-{args.per_class or 'all'}"  # a --workdir's data: one set per choice
        records = prepared(work, name, _writer(dataset, args, tune=False))
        chosen = {name: base[name] * args.lr_factors[0] for name in args.sides}
        if len(args.lr_factors) > 1:
            tune = prepared(work, f"{name}-tune", _writer(dataset, args, tune=True))
            for name in args.sides:
                scores = {}
                for lr in (base[name] * f for f in args.lr_factors):
                    scores[lr] = side(name, tune, lr)(0)[0]
                    print(f"pick {dataset}  {name}  lr {lr:g}  top-1 {scores[lr]:.3f} (seed 0, on a sixth of the "
                          "training images)", flush=True)
                chosen[name] = max(scores, key=scores.get)  # the first of equals
        compare(args.seeds, {f"{name} (lr {chosen[name]:g})": side(name, records, chosen[name])
                             for name in args.sides},
                f"{dataset}, {size} px, batch {batch}, {epochs} epochs, from scratch (whole processes)")
    return 0


def run_keras_fit(args: argparse.Namespace) -> int:
    top1 = keras_fit(Path(args.records), args.image_size, args.batch_size, args.epochs, args.crop_padding,
                     PEERS[args.peer], args.lr, args.seed)
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
    p.add_argument("--per-class", type=int, default=None,
                   help="training images per class (fashion-mnist: 600 by default; digits: all, about 143)")
    p.add_argument("--sides", nargs="+", choices=("ours", *PEERS), default=["ours", *PEERS])
    p.add_argument("--lr-factors", type=float, nargs="+", default=list(LR_FACTORS),
                   help="each side's learning rate is picked from its base value times these (one: no picking)")
    p.add_argument("--config", default=str(REPO / "config/small-images.yaml"), help="our side's config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for our side")
    p.set_defaults(func=run)
    k = subparsers.add_parser("keras-fit", help="one peer run of the accuracy comparison (prints its top-1)")
    k.add_argument("peer", choices=sorted(PEERS))
    k.add_argument("records", help="a prepared TFRecord directory")
    add_timing(k, image_size=32, batch_size=64, rounds=None, workdir=False)
    k.add_argument("--epochs", type=int, default=15)
    k.add_argument("--crop-padding", type=int, required=True, help="our evaluation's centre crop padding")
    k.add_argument("--lr", type=float, default=KERAS_LR)
    k.add_argument("--seed", type=int, default=0)
    k.set_defaults(func=run_keras_fit)
