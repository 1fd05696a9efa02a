"""Fine-tuning against training from scratch, on real data available offline.

B0 is trained once on Fashion-MNIST (``--source-per-class`` images of each of its 10 kinds of clothing, from
Debian's ``dataset-fashion-mnist``) with the demo recipe (config/config.yaml). Then, per seed, a few of
scikit-learn's handwritten digits (``--target-per-class`` training images per digit; the usual 20% of each
digit to validate) are trained for the same epochs, batch and image size twice: from scratch with the demo
recipe, and from the Fashion-MNIST run's weights (a new classifier: other classes) with the demo recipe plus
config/finetune.yaml's fine-tuning keys. Prints every run's validation top-1 and whole-process wall time, then
mean and standard deviation per side.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.peers.accuracy import write_digits, write_fashion_mnist
from benchmarks.peers.options import add_timing
from benchmarks.peers.seeds import REPO, compare, prepared, train_ours
from effnet.core import layout
from effnet.core.config import DEFAULT_CONFIG

DEMO = REPO / DEFAULT_CONFIG
# What fine-tuning changes in a recipe: the starting weights and these keys of the preset's train section.
FINETUNE_KEYS = ("lr_init", "lr_warmup_epochs", "freeze_epochs", "unfrozen_lr_scale", "freeze_bn")


def finetune_sets(preset: Path = REPO / "config/finetune.yaml") -> list[str]:
    """The preset's fine-tuning keys as ``--set`` overrides."""
    train = yaml.safe_load(preset.read_text())["train"]
    return [f"train.{key}={train[key]}" for key in FINETUNE_KEYS if key in train]


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-finetune-"))
    shape = [f"model.image_size={args.image_size}", f"train.batch_size={args.batch_size}",
             f"train.log_every={10 ** 6}"]
    source = prepared(work, "fashion", lambda root: write_fashion_mnist(root, args.image_size, args.source_per_class))
    target = prepared(work, "digits", lambda root: write_digits(root, args.image_size,
                                                                train_per_class=args.target_per_class))
    pretrained = work / "fashion-run"
    if not (pretrained / layout.TRAIN_SUMMARY).exists():
        epochs = [f"train.epochs={args.pretrain_epochs}", f"train.eval_every={args.pretrain_epochs}"]
        top1, wall = train_ours(DEMO, source, pretrained, shape + epochs)
        print(f"pretrained on Fashion-MNIST: top-1 {top1:.3f}, wall {wall:.1f} s")
    scratch = shape + [f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}"]
    tuned = scratch + finetune_sets() + [f"train.init_from={pretrained}"]

    def side(name: str, sets: list[str]):
        return lambda seed: train_ours(DEMO, target, work / f"{name}-seed{seed}-{time.time_ns()}",
                                       sets + [f"train.seed={seed}"])

    compare(args.seeds, {"from scratch (demo recipe)": side("scratch", scratch),
                         "fine-tuned (+ finetune.yaml's keys)": side("finetuned", tuned)},
            f"Digits, {args.target_per_class} training images per class, {args.image_size} px, batch "
            f"{args.batch_size}, {args.epochs} epochs (whole processes)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tuned from Fashion-MNIST vs from scratch on a few digits",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing(p, image_size=32, rounds=None)
    p.add_argument("--epochs", type=int, default=10, help="epochs on the target, both sides")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--source-per-class", type=int, default=300)
    p.add_argument("--target-per-class", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.set_defaults(func=run)
