"""Stage-wise training against training at the final size throughout, on Fashion-MNIST from scratch.

EfficientNetV2's claim (Tan & Le, 2021; NVIDIA's efficientnet_v2/README.md): early stages at small images train
faster, at equal accuracy. Both sides run our train stage with ``--config`` (default config/small-images.yaml,
tf.data input) and the same model, epochs, batch and evaluation size: ``fixed`` trains every epoch at
``--image-size``; ``stagewise`` splits the epochs into ``--stages`` stages growing the images linearly from
``--base-size`` to ``--image-size`` (the preset's regularisation is unchanged: only the size is scheduled, unless
``--set`` adds first-stage values). Fashion-MNIST as in ``accuracy`` (Debian's ``dataset-fashion-mnist``).
Prints every run's validation top-1 and whole-process wall time, then mean and standard deviation per side.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.peers.accuracy import write_fashion_mnist
from benchmarks.peers.options import add_timing
from benchmarks.peers.seeds import REPO, compare, prepared, train_ours


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-stagewise-"))
    size, batch, epochs = args.image_size, args.batch_size, args.epochs
    records = prepared(work, "fashion-mnist", lambda root: write_fashion_mnist(root, size, args.per_class))
    common = [f"model.arch={args.arch}", f"model.image_size={size}", f"train.batch_size={batch}",
              f"train.epochs={epochs}", f"train.eval_every={epochs}", f"train.log_every={10 ** 6}",
              "data.backend=tfdata"] + args.set
    sides = {"fixed": [], "stagewise": [f"train.stages={args.stages}", f"train.base_image_size={args.base_size}"]}

    def side(name: str):
        def train(seed: int) -> tuple[float, float]:
            return train_ours(args.config, records, work / f"{name}-seed{seed}-{time.time_ns()}",
                              common + sides[name] + [f"train.seed={seed}"])
        return train

    compare(args.seeds, {name: side(name) for name in sides},
            f"fashion-mnist {args.per_class}/class, {args.arch}, {epochs} epochs, batch {batch}, fixed {size} px "
            f"against {args.stages} stages {args.base_size}->{size} px (whole processes)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("stagewise", help="stage-wise training vs the fixed final size, N seeds",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing(p, image_size=64, batch_size=64, rounds=None)
    p.add_argument("--arch", default="efficientnetv2-b0")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--base-size", type=int, default=32, help="the first stage's image size")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=300, help="training images per class")
    p.add_argument("--config", default=str(REPO / "config/small-images.yaml"), help="both sides' config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for both sides")
    p.set_defaults(func=run)
