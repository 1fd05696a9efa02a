"""The DALI input pipeline: DALI's TFRecord reader, decoder and augmentations, every output on the rank's device.

Which records a rank reads in an epoch is the sharding plan's (``effnet.data.sharding``, as for tf.data): the
shard files permuted by (seed, epoch), the stream cut into one contiguous range per rank. DALI reads that range
span by span (a span: the rank's part of one shard), in training each span's records in a permutation seeded by
(seed, epoch, rank, span); evaluation reads them in order. The order is written as index files
(``effnet.formats.record_index``: the index stage's lines of the span, permuted), which DALI's reader follows
record by record, so the stream never passes through Python or tf.data: reader threads in C++ read the records
(memory-mapped), and on a GPU host nvJPEG decoding (``mixed``), crop, resize, AutoAugment/RandAugment and flip
run on the rank's GPU, the labels are copied there too, and nothing is chained after the ``DALIDataset`` (a
tf.data op after it has only a CPU kernel and would bring the batches back to the host): the batches of an
epoch are counted here. On a CPU-only host the same graph runs on the CPU (``device_id=None``, ``/cpu:0``).

A resumed epoch starts at its next batch by leaving the consumed records out of its indexes (nothing is read
twice). Consecutive epochs share one pipeline, up to MAX_INDEX_FILES index files; augmentation draws come from
the pipeline's seed, (seed, its first epoch, rank). The pipeline is built before it is wrapped, so a bad input
raises a Python error instead of aborting the process. Augmentations: ``effnet.data.dali_augment``.
"""
from __future__ import annotations

import functools
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from effnet.core.errors import UserError
from effnet.core.ranks import Gpu
from effnet.core.resources import available_cpus
from effnet.data import dali_augment
from effnet.data.autoaugment import RANDAUGMENT_MAGNITUDE
from effnet.data.sharding import RankPlan, derive_seed
from effnet.data.tfdata import AREA_RANGE, ASPECT_RANGE, CROP_ATTEMPTS, EVAL_PADDING, MIN_OBJECT_COVERED
from effnet.formats.record_index import index_path, read_index, read_summary, shard_state, write_index
from effnet.formats.tfrecord import record_spans

ENCODED, LABEL = "image/encoded", "image/class/label"
# Index files one pipeline reads (one per span and epoch): an ImageNet epoch on 8 ranks is ~130 per rank.
MAX_INDEX_FILES = 2048


@dataclass(frozen=True)
class Run:
    """Records of one shard, as (offset, size), in the order they are read."""

    path: str
    records: list[tuple[int, int]]


def shard_indexes(plans: list[RankPlan], index_dir: str | Path) -> dict[str, list[tuple[int, int]]]:
    """The index stage's (offset, size) lines of every shard the plans read, checked against the manifest.

    DALI never checks a record's CRCs, so a shard this rank reads whose size or modification time is not what
    index.json recorded when its records were verified (or that it does not record: an older index stage's) is
    verified again here, before anything is read from it.
    """
    shards = sorted({s for plan in plans for s in plan.files}, key=lambda s: s.path)  # the first one named
    for shard in shards:
        if not index_path(index_dir, shard.path).exists():
            raise UserError(f"{index_path(index_dir, shard.path)}: index not found. The DALI backend reads the shards "
                            f"through the index stage's files (python -m effnet index --tfrecords "
                            f"{Path(shard.path).parent} --output {index_dir}; --index DIR names them), or set "
                            "data.backend: tfdata")
    try:
        recorded = read_summary(index_dir)["shards"]
    except UserError:
        recorded = {}
    own = {span.path for plan in plans for span in plan.spans}
    indexes = {}
    for shard in shards:
        idx = index_path(index_dir, shard.path)
        records = read_index(idx)
        if len(records) != shard.examples:
            raise UserError(f"{idx}: {len(records)} records, but the manifest lists {shard.examples} for "
                            f"{shard.path}: the index is stale, rerun the index stage")
        state = shard_state(shard.path)
        indexed = recorded.get(Path(shard.path).name, {})
        changed = {key: indexed.get(key) for key in state} != state
        if shard.path in own and changed and _verified(shard.path, state["bytes"], state["mtime_ns"]) != records:
            raise UserError(f"{shard.path}: its records are not where {idx} has them: the index is stale, "
                            "rerun the index stage")
        indexes[shard.path] = records
    return indexes


@functools.cache
def _verified(path: str, size: int, mtime_ns: int) -> list[tuple[int, int]]:
    """Every record of a shard changed since it was indexed, CRCs checked (once per process and state)."""
    start = time.monotonic()
    spans = record_spans(path)
    warnings.warn(f"{path}: changed since it was indexed (its size or modification time is not what the index "
                  f"stage's index.json records); its {len(spans)} records verified in {time.monotonic() - start:.1f} "
                  "s. Rerun the index stage to record it as it is now.", stacklevel=2)
    return spans


def reading_order(plan: RankPlan, indexes: dict, *, shuffle_seed: int | None, records: int,
                  skip: int = 0) -> list[Run]:
    """The records ``[skip, records)`` of ``plan``'s stream: its spans in order, each one's records permuted by
    ``shuffle_seed`` and the span's number (in order when it is None)."""
    runs, seen = [], 0
    for number, span in enumerate(plan.spans):
        lines = indexes[span.path][span.start:span.stop]
        if shuffle_seed is not None:
            lines = [lines[i] for i in np.random.default_rng(derive_seed(shuffle_seed, number)).permutation(len(lines))]
        lo, hi = max(skip - seen, 0), min(records - seen, len(lines))
        if lo < hi:
            runs.append(Run(span.path, lines[lo:hi]))
        seen += len(lines)
    return runs


def write_indexes(runs: list[Run], directory: str | Path) -> tuple[list[str], list[str]]:
    """Index files of ``runs`` in ``directory``: the reader's (files, indexes), one entry per run."""
    indexes = [str(Path(directory) / f"{n:05d}.idx") for n in range(len(runs))]
    for run, idx in zip(runs, indexes):
        write_index(idx, run.records)
    return [r.path for r in runs], indexes


def read_records(files: list[str], indexes: list[str], label_offset: int = 0):
    """Inside a pipeline definition: DALI's TFRecord reader over the records ``indexes`` list (one index per
    entry of ``files``), in that order; (encoded images, int32 labels), on the CPU."""
    from nvidia.dali import fn, tfrecord, types

    inputs = fn.readers.tfrecord(path=files, index_path=indexes, random_shuffle=False, features={
        ENCODED: tfrecord.FixedLenFeature((), tfrecord.string, ""),
        LABEL: tfrecord.FixedLenFeature([1], tfrecord.int64, -1)})
    return inputs[ENCODED], fn.cast(fn.reshape(inputs[LABEL], shape=[]) - label_offset, dtype=types.INT32)


def build_pipeline(*, training: bool, batch_size: int, image_size: int, seed: int, augment: str | None,
                   device_id: int | None, num_threads: int, files: list[str], indexes: list[str],
                   label_offset: int = 0, crop_padding: int = EVAL_PADDING, min_area: float = MIN_OBJECT_COVERED,
                   magnitude: int = RANDAUGMENT_MAGNITUDE):
    """The DALI pipeline of one rank: the records ``indexes`` list, of ``files``, in that order, as (float32 HWC
    images in [0, 255], int32 labels), both on the GPU ``device_id`` (CUDA's number) or the CPU (None)."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath

    decode_device = "cpu" if device_id is None else "mixed"

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  enable_conditionals=bool(training and augment))
    def pipeline():
        encoded, labels = read_records(files, indexes, label_offset)
        if training:
            images = fn.decoders.image_random_crop(
                encoded, device=decode_device, output_type=types.RGB,
                random_area=[max(AREA_RANGE[0], min_area), AREA_RANGE[1]],
                random_aspect_ratio=list(ASPECT_RANGE), num_attempts=CROP_ATTEMPTS)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, interp_type=types.INTERP_LINEAR,
                               antialias=False)
            if augment == "autoaugment":
                images = dali_augment.auto_augment(images, image_size)
            elif augment == "randaugment":
                images = dali_augment.rand_augment(images, image_size, magnitude=magnitude)
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
            shape = fn.cast(images.shape(device="cpu"), dtype=types.FLOAT)
            side = fn.cast(fn.cast(dmath.min(shape[0], shape[1]) * (image_size / (image_size + crop_padding)),
                                   dtype=types.INT32), dtype=types.FLOAT)
            images = fn.crop(images, crop_h=side, crop_w=side)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, interp_type=types.INTERP_LINEAR,
                               antialias=False)
            mirror = 0
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC", mirror=mirror,
                                          mean=[0.0], std=[1.0])
        # every output on the dataset's device: the TF plugin refuses a CPU output of a GPU-placed dataset
        return images, (labels if device_id is None else labels.gpu())

    return pipeline()


@dataclass
class Stream:
    """The batches of ``plans`` (consecutive epochs from ``first_epoch``), the first ``skip`` left out; in
    evaluation the padding that completes the last batches is labelled -1. Iterate it once per use."""

    plans: list[RankPlan]
    index_dir: str | Path
    training: bool
    batch_size: int
    image_size: int
    seed: int
    first_epoch: int
    rank: int
    augment: str | None
    skip: int
    gpu: Gpu | None
    crop_padding: int = EVAL_PADDING
    min_area: float = MIN_OBJECT_COVERED
    magnitude: int = RANDAUGMENT_MAGNITUDE

    def __post_init__(self):
        self.indexes = shard_indexes(self.plans, self.index_dir)  # a missing or stale index fails here, at once

    def _epoch(self, i: int) -> list[Run]:
        plan = self.plans[i]
        if self.training:  # whole batches, shuffled per epoch and rank
            shuffle_seed = derive_seed(self.seed, self.first_epoch + i, self.rank, 1)
            records = plan.steps * self.batch_size
        else:  # every example once, in order (the reader wraps around into the padding)
            shuffle_seed, records = None, plan.examples
        skip = self.skip * self.batch_size if i == 0 else 0
        return reading_order(plan, self.indexes, shuffle_seed=shuffle_seed, records=records, skip=skip)

    def _groups(self):
        """(first plan, runs, batches) of each pipeline: consecutive epochs within MAX_INDEX_FILES."""
        group, first, batches = [], 0, 0
        for i in range(len(self.plans)):
            runs = self._epoch(i)
            if group and len(group) + len(runs) > MAX_INDEX_FILES:
                yield first, group, batches
                group, first, batches = [], i, 0
            group += runs
            batches += self.plans[i].steps - (self.skip if i == 0 else 0)
        yield first, group, batches

    def __iter__(self):
        from nvidia.dali.plugin.tf import DALIDataset

        device_id = self.gpu.cuda_index if self.gpu else None  # DALI's (and CUDA's) number of the rank's GPU
        device = self.gpu.tf_device if self.gpu else "/cpu:0"  # TensorFlow's (logical) name of it
        plan = self.plans[0]
        shape = (self.batch_size, self.image_size, self.image_size, 3)
        for first, runs, batches in self._groups():
            with tempfile.TemporaryDirectory(prefix="effnet-dali-") as tmp:
                files, indexes = write_indexes(runs, tmp)
                pipe = build_pipeline(
                    training=self.training, batch_size=self.batch_size, image_size=self.image_size,
                    seed=derive_seed(self.seed, self.first_epoch + first, self.rank, 3), augment=self.augment,
                    device_id=device_id, num_threads=min(8, available_cpus()), files=files, indexes=indexes,
                    label_offset=plan.label_offset, crop_padding=self.crop_padding, min_area=self.min_area,
                    magnitude=self.magnitude)
                try:
                    pipe.build()
                except RuntimeError as exc:
                    raise UserError(f"DALI pipeline over the shards in {Path(runs[0].path).parent}: {exc}") from exc
                with tf.device(device):
                    batches_of = iter(DALIDataset(pipeline=pipe, batch_size=self.batch_size, device_id=device_id,
                                                  output_shapes=(shape, (self.batch_size,)),
                                                  output_dtypes=(tf.float32, tf.int32)))
                    for step in range(batches):
                        images, labels = next(batches_of)
                        real = plan.examples - step * self.batch_size
                        if not self.training and real < self.batch_size:  # padding (the reader wrapped around)
                            labels = tf.where(tf.range(self.batch_size) < real, labels, -1)
                        yield images, labels
                del batches_of, pipe


def build(plans: list[RankPlan], *, index_dir: str | Path, training: bool, batch_size: int, image_size: int,
          seed: int, first_epoch: int, rank: int, augment: str | None, skip: int, gpu: Gpu | None,
          crop_padding: int = EVAL_PADDING, min_area: float = MIN_OBJECT_COVERED,
          magnitude: int = RANDAUGMENT_MAGNITUDE) -> Stream:
    """Batches of (float32 images, int32 labels) for ``plans``, read through the indexes in ``index_dir``."""
    return Stream(plans, index_dir, training, batch_size, image_size, seed, first_epoch, rank, augment, skip, gpu,
                  crop_padding, min_area, magnitude)
