"""The DALI input pipeline: tf.data reads the records, DALI decodes and augments them.

The record stream is the tfdata backend's (``tfdata.train_examples`` / ``eval_examples``):
the same per-rank sharding, the same (seed, epoch) order across any number of epochs in one
pipeline, the same resume by skipping consumed batches. Each example reaches DALI through
``DALIDatasetWithInputs`` as one uint8 vector (4 label bytes, then the JPEG); on a GPU host
decoding (nvJPEG, ``mixed``), crop, resize, AutoAugment/RandAugment and flip run on the
rank's GPU, on a CPU-only host the same graph runs on the CPU (``device_id=None``, under
``/cpu:0``). The pipeline is built before it is wrapped, so a bad input raises a Python
error instead of aborting the process. Augmentations: ``effnet.data.dali_augment``.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from effnet.data import dali_augment, tfdata
from effnet.data.sharding import RankPlan, derive_seed
from effnet.data.tfdata import AREA_RANGE, ASPECT_RANGE, CROP_ATTEMPTS, EVAL_PADDING, MIN_OBJECT_COVERED
from effnet.errors import UserError
from effnet.ranks import Gpu
from effnet.resources import available_cpus

INPUT = "example"
LABEL_BYTES = 4


def _packed(encoded, label):
    """One uint8 vector: the int32 label's bytes, then the encoded image."""
    return tf.concat([tf.bitcast(tf.cast(label, tf.int32), tf.uint8), tf.io.decode_raw(encoded, tf.uint8)], 0)


def build_pipeline(*, training: bool, batch_size: int, image_size: int, seed: int, augment: str | None,
                   device_id: int | None, num_threads: int, crop_padding: int = EVAL_PADDING,
                   min_area: float = MIN_OBJECT_COVERED):
    """The DALI pipeline of one rank: packed examples in, (float32 HWC images in [0, 255], int32 labels) out."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath

    decode_device = "cpu" if device_id is None else "mixed"

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  enable_conditionals=bool(training and augment))
    def pipeline():
        packed = fn.external_source(name=INPUT, dtype=types.UINT8, ndim=1, layout="")
        labels = fn.reshape(fn.reinterpret(packed[:LABEL_BYTES], dtype=types.INT32), shape=[])
        encoded = packed[LABEL_BYTES:]
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
                images = dali_augment.rand_augment(images, image_size)
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


def build(plans: list[RankPlan], *, training: bool, batch_size: int, image_size: int, seed: int, first_epoch: int,
          rank: int, augment: str | None, skip: int, gpu: Gpu | None,
          crop_padding: int = EVAL_PADDING, min_area: float = MIN_OBJECT_COVERED) -> tf.data.Dataset:
    """Batches of (float32 images, int32 labels) for ``plans``; evaluation pads with label -1."""
    from nvidia.dali.plugin.tf.experimental import DALIDatasetWithInputs, Input

    plan = plans[0]
    device_id = gpu.cuda_index if gpu else None  # DALI's (and CUDA's) number of the rank's GPU
    if training:
        examples = tfdata.train_examples(plans, batch_size=batch_size, seed=seed, first_epoch=first_epoch, rank=rank,
                                         skip=skip).map(lambda encoded, label, _: _packed(encoded, label))
    else:  # pad with copies of the first example, labelled -1
        examples = tfdata.eval_examples(plan).map(_packed)
        padding = examples.take(1).map(lambda p: tf.concat([tf.bitcast(-1, tf.uint8), p[LABEL_BYTES:]], 0))
        examples = examples.concatenate(padding.repeat(plan.steps * batch_size - plan.examples))
    pipe = build_pipeline(training=training, batch_size=batch_size, image_size=image_size,
                          seed=derive_seed(seed, first_epoch, rank, 3), augment=augment,
                          device_id=device_id,
                          num_threads=min(8, available_cpus()), crop_padding=crop_padding,
                          min_area=min_area)
    try:
        pipe.build()
    except RuntimeError as exc:
        raise UserError(f"DALI pipeline over the shards in {Path(plan.files[0].path).parent}: {exc}") from exc
    with tf.device(gpu.tf_device if gpu else "/cpu:0"):
        ds = DALIDatasetWithInputs(
            pipeline=pipe, input_datasets={INPUT: Input(examples, batch=False)}, batch_size=batch_size,
            device_id=device_id, output_shapes=((batch_size, image_size, image_size, 3), (batch_size,)),
            output_dtypes=(tf.float32, tf.int32))
    return ds.take(plan.steps * len(plans) - skip)
