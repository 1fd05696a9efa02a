"""The DALI input pipeline, wrapped as a tf.data.Dataset by the DALI TF plugin.

On a GPU host, JPEG decoding (nvJPEG, ``mixed``), crop, resize, AutoAugment/RandAugment
and flip run on the rank's GPU; on a CPU-only host the same graph runs on the CPU
(``device_id=None``, under ``/cpu:0``). The reader uses the index files written by
``python -m effnet index``; the pipeline is built before it is wrapped, so a bad input
raises a Python error instead of aborting the process.

Augmentations use DALI's automatic-augmentation library with the same policy table as
tf.data (``autoaugment.POLICY_V0``) for AutoAugment, and DALI's RandAugment (2 layers,
magnitude 10) for RandAugment.
"""
from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from effnet.data import autoaugment
from effnet.data.index import current_index, index_path
from effnet.data.sharding import RankPlan, derive_seed
from effnet.data.tfdata import AREA_RANGE, ASPECT_RANGE, CROP_ATTEMPTS, EVAL_PADDING
from effnet.errors import UserError


def index_files(plan: RankPlan, index_dir: str | Path) -> list[str]:
    """The index of each shard in ``plan.files``, checked to exist and to describe its shard."""
    if index_dir is None:
        raise UserError("the dali backend needs index_dir (run `python -m effnet index`)")
    paths = []
    for shard in plan.files:
        idx = index_path(index_dir, shard.path)
        if not idx.exists():
            raise UserError(f"{idx}: DALI index missing for {shard.path} (run `python -m effnet index`)")
        spans = current_index(Path(shard.path), idx)
        if spans is None or len(spans) != shard.examples:
            raise UserError(f"{idx}: stale index for {shard.path} (rerun `python -m effnet index`)")
        paths.append(str(idx))
    return paths


def _policy_v0():
    """AutoAugment policy v0 in DALI's terms, with v0's level-to-argument mapping."""
    from nvidia.dali.auto_aug import augmentations as a
    from nvidia.dali.auto_aug.core import Policy

    enhance = dict(mag_range=(-0.9, 0.9), randomly_negate=False)  # factor 1 + m: 0.1 ... 1.9, as v0
    translate = dict(mag_range=(0, autoaugment.AUTOAUGMENT_CONSTANTS["translate"]))
    ops = {
        "AutoContrast": a.auto_contrast, "Equalize": a.equalize, "Invert": a.invert,
        "Rotate": a.rotate, "ShearX": a.shear_x, "ShearY": a.shear_y,
        "TranslateX": a.translate_x_no_shape.augmentation(**translate),
        "TranslateY": a.translate_y_no_shape.augmentation(**translate),
        "Posterize": a.posterize.augmentation(mag_range=(8, 4)),     # keeps 0 ... 4 bits
        "Solarize": a.solarize.augmentation(mag_range=(0, 256)),     # threshold grows with the level
        "SolarizeAdd": a.solarize_add, "Color": a.color.augmentation(**enhance),
    }
    sub_policies = [[(ops[name], probability, None if ops[name].mag_range is None else level)
                     for name, probability, level in pair if probability > 0]
                    for pair in autoaugment.POLICY_V0]
    return Policy("policy_v0", num_magnitude_bins=int(autoaugment.MAX_LEVEL) + 1, sub_policies=sub_policies)


def build_pipeline(plan: RankPlan, indexes: list[str], *, training: bool, batch_size: int, image_size: int,
                   shard_id: int, num_shards: int, seed: int, augment: str | None, device_id: int | None,
                   num_threads: int):
    """The DALI pipeline for one rank: (float32 HWC images in [0, 255], int32 labels)."""
    from nvidia.dali import fn, pipeline_def, tfrecord, types
    from nvidia.dali import math as dmath
    from nvidia.dali.auto_aug import auto_augment, rand_augment

    decode_device = "cpu" if device_id is None else "mixed"

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  enable_conditionals=bool(training and augment))
    def pipeline():
        inputs = fn.readers.tfrecord(
            path=[s.path for s in plan.files], index_path=indexes, name="reader", shard_id=shard_id,
            num_shards=num_shards, random_shuffle=training, stick_to_shard=True, pad_last_batch=not training,
            seed=seed, features={"image/encoded": tfrecord.FixedLenFeature((), tfrecord.string, ""),
                                 "image/class/label": tfrecord.FixedLenFeature([1], tfrecord.int64, -1)})
        encoded = inputs["image/encoded"]
        if training:
            images = fn.decoders.image_random_crop(
                encoded, device=decode_device, output_type=types.RGB, random_area=list(AREA_RANGE),
                random_aspect_ratio=list(ASPECT_RANGE), num_attempts=CROP_ATTEMPTS)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, interp_type=types.INTERP_LINEAR)
            if augment == "autoaugment":
                images = auto_augment.apply_auto_augment(_policy_v0(), images)
            elif augment == "randaugment":
                images = rand_augment.rand_augment(images, n=2, m=10, shape=[image_size, image_size])
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
            shape = fn.cast(images.shape(device="cpu"), dtype=types.FLOAT)
            side = fn.cast(fn.cast(dmath.min(shape[0], shape[1]) * (image_size / (image_size + EVAL_PADDING)),
                                   dtype=types.INT32), dtype=types.FLOAT)
            images = fn.crop(images, crop_h=side, crop_w=side)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, interp_type=types.INTERP_LINEAR)
            mirror = 0
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC", mirror=mirror,
                                          mean=[0.0], std=[1.0])
        labels = fn.reshape(fn.cast(inputs["image/class/label"], dtype=types.INT32), shape=[]) - plan.label_offset
        return images, labels

    return pipeline()


def build(plan: RankPlan, index_dir, *, training: bool, batch_size: int, image_size: int, seed: int, epoch: int,
          rank: int, world_size: int, augment: str | None, device_id: int | None) -> tf.data.Dataset:
    """Batches of (float32 images, int32 labels) for ``plan``; evaluation pads with label -1."""
    from nvidia.dali.plugin.tf import DALIDataset

    pipe = build_pipeline(plan, index_files(plan, index_dir), training=training, batch_size=batch_size,
                          image_size=image_size, shard_id=rank, num_shards=world_size,
                          seed=derive_seed(seed, epoch, rank, 3), augment=augment, device_id=device_id,
                          num_threads=max(1, min(8, os.cpu_count() or 1)))
    try:
        pipe.build()
    except RuntimeError as exc:
        shards = Path(plan.files[0].path).parent
        raise UserError(f"DALI pipeline over {len(plan.files)} shards in {shards}: {exc}") from exc
    device = "/cpu:0" if device_id is None else f"/gpu:{device_id}"
    with tf.device(device):
        ds = DALIDataset(pipeline=pipe, batch_size=batch_size, device_id=device_id,
                         output_shapes=((batch_size, image_size, image_size, 3), (batch_size,)),
                         output_dtypes=(tf.float32, tf.int32))
    ds = ds.take(plan.steps)
    if not training:  # positions past this rank's examples are DALI's padding
        ds = ds.enumerate().map(lambda step, batch: (batch[0], _mask_padding(batch[1], step, batch_size,
                                                                               plan.examples)))
    return ds


def _mask_padding(labels, step, batch_size: int, examples: int):
    positions = tf.cast(step, tf.int32) * batch_size + tf.range(batch_size)
    return tf.where(positions < examples, labels, -1)
