"""Which records each Horovod rank reads, per epoch; shared by the tf.data and DALI backends.

Training: the shard files are permuted by (seed, epoch) and the concatenated record
stream is cut into ``world_size`` contiguous ranges, one per rank (what DALI's reader
does with shard_id/num_shards): ranks are disjoint, together cover the data, and a
resumed run sees the order it would have seen. Every rank runs the same number of
full batches (the smallest range's), so collective ops never wait on a missing rank.

Evaluation: the files in sorted order, cut the same way; every rank runs the same number
of batches and pads its last ones, so each example is counted exactly once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet.core import layout
from effnet.core.errors import UserError
from effnet.formats.records import load_manifest

SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "eval": "validation"}


@dataclass(frozen=True)
class Shard:
    """One TFRecord file and its record count."""

    path: str
    examples: int
    bytes: int


@dataclass(frozen=True)
class Span:
    """Records ``[start, stop)`` of one file."""

    path: str
    start: int
    stop: int


@dataclass(frozen=True)
class RankPlan:
    """What one rank reads in one epoch."""

    files: list[Shard]        # the epoch's file order (all ranks)
    spans: list[Span]         # this rank's records, in order
    examples: int             # this rank's records
    steps: int                # batches per epoch, equal on every rank
    label_offset: int
    num_classes: int


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (seed, epoch, rank, purpose ...)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def read_manifest(data_dir: str | Path, split: str) -> tuple[dict, list[Shard]]:
    """The manifest and the split's shards, checking each file exists with the recorded size."""
    data_dir = Path(data_dir)
    path = data_dir / layout.RECORDS_MANIFEST
    manifest = load_manifest(data_dir)
    try:
        entries = manifest["splits"][SPLIT_NAMES[split]]["shards"]
    except KeyError:
        raise UserError(f"{path}: no split {split!r}") from None
    shards = []
    for entry in entries:
        shard = data_dir / entry["file"]
        if not shard.exists():
            raise UserError(f"{shard}: shard listed in {path} is missing")
        size = shard.stat().st_size
        if size != entry["bytes"]:
            raise UserError(f"{shard}: {size} bytes but {path} records {entry['bytes']} "
                            "(truncated or rewritten shard; rerun prepare)")
        shards.append(Shard(str(shard), entry["examples"], entry["bytes"]))
    return manifest, shards


def _ranges(shards: list[Shard], start: int, stop: int) -> list[Span]:
    spans, offset = [], 0
    for shard in shards:
        lo, hi = max(start - offset, 0), min(stop - offset, shard.examples)
        if lo < hi:
            spans.append(Span(shard.path, lo, hi))
        offset += shard.examples
    return spans


def plan_epochs(data_dir: str | Path, split: str, *, training: bool, batch_size: int, epochs: range,
                rank: int = 0, world_size: int = 1, seed: int = 0, max_steps: int | None = None) -> list[RankPlan]:
    """The records rank ``rank`` of ``world_size`` reads in each of ``epochs`` (the manifest is read once).

    Training epochs are cut to ``max_steps`` batches when it is given (and smaller).
    """
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not in [0, {world_size})")
    manifest, shards = read_manifest(data_dir, split)
    total = sum(s.examples for s in shards)
    bounds = [total * r // world_size for r in range(world_size + 1)]
    sizes = [hi - lo for lo, hi in zip(bounds, bounds[1:])]
    if training:
        steps = min(sizes) // batch_size
        if steps == 0:
            raise UserError(f"{data_dir}: {total} training examples over {world_size} ranks do not fill one "
                            f"batch of {batch_size} per rank")
        steps = min(steps, max_steps or steps)
    else:
        steps = math.ceil(max(sizes) / batch_size)
    plans = []
    for epoch in epochs:
        files = shards
        if training:
            order = np.random.default_rng(derive_seed(seed, epoch, 0x5EED)).permutation(len(shards))
            files = [shards[i] for i in order]
        plans.append(RankPlan(files, _ranges(files, bounds[rank], bounds[rank + 1]), sizes[rank], steps,
                              manifest["label_offset"], manifest["num_classes"]))
    return plans


def plan(data_dir: str | Path, split: str, *, training: bool, batch_size: int, rank: int = 0,
         world_size: int = 1, seed: int = 0, epoch: int = 0) -> RankPlan:
    """The records rank ``rank`` of ``world_size`` reads in ``epoch``."""
    return plan_epochs(data_dir, split, training=training, batch_size=batch_size, epochs=range(epoch, epoch + 1),
                       rank=rank, world_size=world_size, seed=seed)[0]
