"""``build_dataset``: training or evaluation batches for one Horovod rank, from either backend."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from effnet.core import layout, ranks
from effnet.core.errors import UserError
from effnet.data import sharding
from effnet.data.autoaugment import RANDAUGMENT_MAGNITUDE
from effnet.data.tfdata import EVAL_PADDING, MIN_OBJECT_COVERED
from effnet.formats.records import check_example
from effnet.formats.tfrecord import iter_records

BACKENDS = ("tfdata", "dali")
AUGMENTS = (None, "autoaugment", "randaugment")
DIAGNOSIS_SECONDS = 60.0


@dataclass
class Batches:
    """``(images, labels)`` batches for one rank: ``epochs`` consecutive epochs from ``first_epoch``.

    images: float32 NHWC in [0, 255]; labels: int32 class ids. Every rank yields ``steps``
    full batches per epoch; a stream that resumes inside its first epoch leaves out the
    ``skip`` batches already consumed. ``dataset`` spans all the epochs (a tf.data.Dataset, or
    the DALI backend's ``Stream``); each epoch's order is a function of (seed, epoch, rank). In
    evaluation the padding examples that complete the last batches carry label -1;
    ``real_counts`` gives the number of real examples per batch. A record that cannot be read
    stops the iteration with a UserError naming its shard and offset.
    """

    dataset: object  # iterable: tf.data.Dataset or effnet.data.dali.Stream
    plans: list[sharding.RankPlan]
    batch_size: int
    training: bool
    first_epoch: int = 0
    skip: int = 0

    @property
    def plan(self) -> sharding.RankPlan:
        """The plan of the first epoch."""
        return self.plans[0]

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return self.plan.steps

    @property
    def epochs(self) -> int:
        return len(self.plans)

    @property
    def examples(self) -> int:
        """This rank's examples per epoch."""
        return self.plan.examples

    @property
    def num_classes(self) -> int:
        return self.plan.num_classes

    def __iter__(self):
        iterator = iter(self.dataset)
        consumed = self.skip
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as exc:
                epoch, step = divmod(consumed, self.steps)
                raise UserError(diagnose(self.plans[epoch], step * self.batch_size, exc.message)) from exc
            consumed += 1
            yield batch

    def __len__(self) -> int:
        return self.steps * self.epochs - self.skip

    @property
    def real_counts(self) -> list[int]:
        """Real (non-padding) examples in each batch of this rank's epoch."""
        return [max(0, min(self.batch_size, self.examples - i * self.batch_size)) for i in range(self.steps)]


def diagnose(plan: sharding.RankPlan, position: int, error: str, seconds: float = DIAGNOSIS_SECONDS) -> str:
    """Name the record behind a read ``error`` met near ``position`` of ``plan``'s stream, within ``seconds``.

    Spans of a file the error names are checked first, then the others from the one holding
    ``position`` on; only the rank's own records are read. When no bad record is found the
    error is reported as it is (possibly transient I/O), and a cut-short search says so.
    """
    spans, seen = [], 0
    for span in plan.spans:
        spans.append((span.path not in error, seen + span.stop - span.start <= position, span))
        seen += span.stop - span.start
    deadline = time.monotonic() + seconds
    checked = 0
    for _, _, span in sorted(spans, key=lambda s: s[:2]):
        try:
            records = zip(range(span.start, span.stop), iter_records(span.path, first=span.start))
            for n, (offset, data) in records:
                check_example(data, f"{span.path} (record {n} at byte offset {offset})")
                checked += 1
                if time.monotonic() > deadline:
                    return (f"{error} (diagnosis cut short after {seconds:.0f} s and {checked} records, at "
                            f"{span.path} record {n}: no bad record found so far)")
        except UserError as exc:
            return str(exc)
    files = ", ".join(sorted({s.path for s in plan.spans}))
    return f"{files}: {error} (every record of this rank checked out: a transient I/O error?)"


def default_index_dir(data_dir: str | Path) -> Path:
    """Where a pipeline run keeps the DALI indexes of the records in ``data_dir``: beside it."""
    return Path(data_dir).resolve().parent / layout.INDEX


def build_dataset(data_dir: str | Path, split: str, *, backend: str = "tfdata", batch_size: int, image_size: int,
                  rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0, epochs: int = 1, skip: int = 0,
                  steps_per_epoch: int | None = None, augment: str | None = None, training: bool | None = None,
                  gpu: str | None = "auto", crop_padding: int = EVAL_PADDING,
                  crop_min_area: float = MIN_OBJECT_COVERED, index_dir: str | Path | None = None,
                  randaug_magnitude: int = RANDAUGMENT_MAGNITUDE) -> Batches:
    """Batches of ``split`` ("train" or "validation") from the shards in ``data_dir`` for ``rank``.

    ``training`` defaults to ``split == "train"``: random-resized crop (at least ``crop_min_area``
    of the image, the reference's 0.1 by default), random flip and ``augment`` (RandAugment at
    ``randaug_magnitude``), over ``epochs`` epochs from ``epoch`` leaving out the first ``skip`` batches,
    each epoch cut to ``steps_per_epoch`` batches if given;
    otherwise centre crop (``image_size / (image_size + crop_padding)`` of the shorter side, the
    reference's padding by default), every example exactly once across ranks (one epoch).
    ``backend="dali"`` reads the shards through the index stage's files in ``index_dir`` (by default
    the pipeline's layout: ``dali-index`` beside ``data_dir``) and decodes and augments with DALI, on the
    rank's GPU if there is one (``gpu="auto"``), else (or with ``gpu=None``) on the CPU.
    """
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if augment not in AUGMENTS:
        raise UserError(f"augment {augment!r}: choose one of None, 'autoaugment', 'randaugment'")
    training = split == "train" if training is None else training
    epochs = epochs if training else 1
    plans = sharding.plan_epochs(data_dir, split, training=training, batch_size=batch_size,
                                 epochs=range(epoch, epoch + epochs), rank=rank, world_size=world_size, seed=seed,
                                 max_steps=steps_per_epoch)
    if not 0 <= skip < plans[0].steps:
        raise UserError(f"skip {skip}: a resumed epoch has {plans[0].steps} batches")
    augment = augment if training else None
    if backend == "tfdata":
        from effnet.data import tfdata
        ds = (tfdata.train_batches(plans, batch_size=batch_size, image_size=image_size, seed=seed,
                                   first_epoch=epoch, rank=rank, augment=augment, skip=skip,
                                   min_area=crop_min_area, magnitude=randaug_magnitude) if training
              else tfdata.eval_batches(plans[0], batch_size=batch_size, image_size=image_size,
                                       crop_padding=crop_padding))
    else:
        from effnet.data import dali
        ds = dali.build(plans, index_dir=index_dir or default_index_dir(data_dir), training=training,
                        batch_size=batch_size, image_size=image_size, seed=seed, first_epoch=epoch, rank=rank,
                        augment=augment, skip=skip, gpu=ranks.rank_gpu() if gpu == "auto" else None,
                        crop_padding=crop_padding, min_area=crop_min_area, magnitude=randaug_magnitude)
    return Batches(ds, plans, batch_size, training, epoch, skip)
