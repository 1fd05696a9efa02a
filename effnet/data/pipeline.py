"""``build_dataset``: training or evaluation batches for one Horovod rank, from either backend."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from effnet.data import sharding
from effnet.data.prepare import check_example
from effnet.data.tfrecord import iter_records
from effnet.errors import UserError

BACKENDS = ("tfdata", "dali")
AUGMENTS = (None, "autoaugment", "randaugment")


@dataclass
class Batches:
    """An epoch of ``(images, labels)`` batches for one rank.

    images: float32 NHWC in [0, 255]; labels: int32 class ids. Every rank yields ``steps``
    full batches. In evaluation the padding examples that complete the last batches carry
    label -1; ``real_counts`` gives the number of real examples per batch. A record that
    cannot be read stops the iteration with a UserError naming its shard and offset.
    """

    dataset: tf.data.Dataset
    plan: sharding.RankPlan
    batch_size: int
    training: bool

    @property
    def steps(self) -> int:
        return self.plan.steps

    @property
    def examples(self) -> int:
        return self.plan.examples

    @property
    def num_classes(self) -> int:
        return self.plan.num_classes

    def __iter__(self):
        iterator = iter(self.dataset)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as exc:
                shards = ", ".join(s.path for s in self.plan.spans)
                raise UserError(find_bad_record(self.plan) or f"{shards}: {exc.message}") from exc
            yield batch

    def __len__(self) -> int:
        return self.steps

    @property
    def real_counts(self) -> list[int]:
        """Real (non-padding) examples in each batch of this rank."""
        return [max(0, min(self.batch_size, self.examples - i * self.batch_size)) for i in range(self.steps)]


def find_bad_record(plan: sharding.RankPlan) -> str | None:
    """Describe the first record of ``plan`` that is not an Example with a decodable image, if any."""
    for span in plan.spans:
        try:
            for n, (offset, data) in enumerate(iter_records(span.path)):
                if span.start <= n < span.stop:
                    check_example(data, f"{span.path} (record {n} at byte offset {offset})")
        except UserError as exc:
            return str(exc)
    return None


def _gpu_device_id() -> int | None:
    """The rank's local GPU when there is one (Horovod/SLURM local rank), else None (CPU mode)."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    for var in ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"):
        if var in os.environ:
            return int(os.environ[var]) % len(gpus)
    return 0


def build_dataset(data_dir: str | Path, split: str, *, backend: str = "tfdata", batch_size: int, image_size: int,
                  index_dir: str | Path | None = None, rank: int = 0, world_size: int = 1, seed: int = 0,
                  epoch: int = 0, augment: str | None = None, training: bool | None = None,
                  device_id: int | None | str = "auto") -> Batches:
    """Batches of ``split`` ("train" or "validation") from the shards in ``data_dir`` for ``rank``.

    ``training`` defaults to ``split == "train"``: random-resized crop, random flip and
    ``augment``; otherwise centre crop, every example exactly once across ranks.
    ``backend="dali"`` needs ``index_dir``; ``device_id="auto"`` uses the rank's local GPU if
    there is one, else the CPU.
    """
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if augment not in AUGMENTS:
        raise UserError(f"augment {augment!r}: choose one of None, 'autoaugment', 'randaugment'")
    training = split == "train" if training is None else training
    plan = sharding.plan(data_dir, split, training=training, batch_size=batch_size, rank=rank,
                         world_size=world_size, seed=seed, epoch=epoch)
    augment = augment if training else None
    if backend == "tfdata":
        from effnet.data import tfdata
        ds = tfdata.build(plan, training=training, batch_size=batch_size, image_size=image_size, seed=seed,
                          epoch=epoch, rank=rank, augment=augment)
    else:
        from effnet.data import dali
        ds = dali.build(plan, index_dir, training=training, batch_size=batch_size, image_size=image_size,
                        seed=seed, epoch=epoch, rank=rank, world_size=world_size, augment=augment,
                        device_id=_gpu_device_id() if device_id == "auto" else device_id)
    return Batches(ds, plan, batch_size, training)
