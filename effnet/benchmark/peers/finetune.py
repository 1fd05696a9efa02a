"""Fine-tuning against training from scratch, on real data available offline.

B0 is trained once on scikit-learn's handwritten digits (the accuracy comparison's images) with the demo recipe
(config/config.yaml). Then, per seed, the demo shapes (``--train-per-class`` images of each of 10 classes) are
trained for the same epochs, batch and image size twice: from scratch with the demo recipe, and from the digits
run's weights with the demo recipe plus config/finetune.yaml's fine-tuning keys. Prints every run's validation
top-1 and whole-process wall time, then mean and standard deviation per side.
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
import yaml

from effnet.benchmark.peers.accuracy import write_digits
from effnet.benchmark.peers.options import add_timing

REPO = Path(__file__).resolve().parents[3]
# What fine-tuning changes in a recipe: the starting weights and these keys of the preset's train section.
FINETUNE_KEYS = ("lr_init", "lr_warmup_epochs", "freeze_epochs", "unfrozen_lr_scale", "freeze_bn")


def finetune_sets(preset: Path = REPO / "config/finetune.yaml") -> list[str]:
    """The preset's fine-tuning keys as ``--set`` overrides."""
    train = yaml.safe_load(preset.read_text())["train"]
    return [f"train.{key}={train[key]}" for key in FINETUNE_KEYS if key in train]


def train(data: Path, output: Path, sets: list[str]) -> tuple[float, float]:
    """Validation top-1 and whole-process wall seconds of ``python -m effnet train`` (demo recipe + ``sets``)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "effnet", "train", "--config", str(REPO / "config/config.yaml"),
                    "--data", str(data), "--output", str(output), *(a for s in sets for a in ("--set", s))],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return json.loads((output / "train_summary.json").read_text())["eval"]["top1"], wall


def run(args: argparse.Namespace) -> int:
    from effnet.data.demo import write_demo
    from effnet.data.prepare import prepare

    work = Path(args.workdir or tempfile.mkdtemp(prefix="effnet-peers-finetune-"))
    shape = [f"model.image_size={args.image_size}", f"train.batch_size={args.batch_size}",
             f"train.log_every={10 ** 6}"]
    if not (work / "digits-rec/manifest.json").exists():
        write_digits(work / "digits", args.image_size)
        prepare("folders", str(work / "digits"), str(work / "digits-rec"), train_shards=2, val_shards=1, workers=1)
    if not (work / "shapes-rec/manifest.json").exists():
        write_demo(work / "shapes", train_per_class=args.train_per_class, val_per_class=args.val_per_class)
        prepare("folders", str(work / "shapes"), str(work / "shapes-rec"), train_shards=2, val_shards=1, workers=1)
    pretrained = work / "digits-run"
    if not (pretrained / "train_summary.json").exists():
        top1, wall = train(work / "digits-rec", pretrained, shape + [f"train.epochs={args.pretrain_epochs}",
                                                                      f"train.eval_every={args.pretrain_epochs}"])
        print(f"pretrained on digits: top-1 {top1:.3f}, wall {wall:.1f} s")
    target = shape + [f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}"]
    sides = {"from scratch (demo recipe)": target,
             "fine-tuned from digits (+ finetune.yaml)": target + finetune_sets() + [f"train.init_from={pretrained}"]}
    results = {side: [] for side in sides}
    for seed in args.seeds:
        for side, sets in sides.items():
            out = work / f"{'scratch' if 'scratch' in side else 'finetuned'}-seed{seed}-{time.time_ns()}"
            results[side].append(train(work / "shapes-rec", out, sets + [f"train.seed={seed}"]))
            print(f"seed {seed}  {side:42s} top-1 {results[side][-1][0]:.3f}  wall {results[side][-1][1]:6.1f} s",
                  flush=True)
    print(f"\nDemo shapes, {args.train_per_class} training images per class, {args.image_size} px, batch "
          f"{args.batch_size}, {args.epochs} epochs, seeds {args.seeds}:")
    for side, runs in results.items():
        top1, wall = np.array(runs).T
        print(f"  {side:42s} top-1 {top1.mean():.3f} +- {top1.std(ddof=1) if len(runs) > 1 else 0:.3f}   "
              f"wall {wall.mean():6.1f} +- {wall.std(ddof=1) if len(runs) > 1 else 0:.1f} s   "
              f"runs: {', '.join(f'{t:.3f}' for t in top1)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tuned from digits vs from scratch on the demo shapes",
                              description=__doc__)
    add_timing(p, image_size=32, rounds=None)
    p.add_argument("--epochs", type=int, default=8, help="epochs on the target, both sides")
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--train-per-class", type=int, default=30)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.set_defaults(func=run)
