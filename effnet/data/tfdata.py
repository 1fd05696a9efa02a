"""The tf.data input pipeline: parallel interleave over shards, fused JPEG decode-and-crop, AUTOTUNE.

Per image (all TensorFlow ops, no Python): parse, pick the crop window from the JPEG header,
``decode_and_crop_jpeg`` (decodes only the window), bilinear resize, and for training a
random horizontal flip and optional AutoAugment / RandAugment. Random choices are stateless,
seeded per example from (seed, epoch, rank), so an epoch is reproducible.
"""
from __future__ import annotations

import tensorflow as tf

from effnet.data import autoaugment
from effnet.data.sharding import RankPlan, derive_seed

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/class/label": tf.io.FixedLenFeature((), tf.int64),
}
AREA_RANGE = (0.05, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 100
EVAL_PADDING = 32
SHUFFLE_BUFFER = 10_000
READ_BUFFER = 8 << 20


def _parse(record, path, label_offset: int):
    features = tf.io.parse_single_example(record, FEATURES)
    encoded = features["image/encoded"]
    checked = tf.debugging.Assert(tf.io.is_jpeg(encoded), [path, "holds a record whose image/encoded is not a JPEG"])
    with tf.control_dependencies([checked]):
        encoded = tf.identity(encoded)
    return encoded, tf.cast(features["image/class/label"], tf.int32) - label_offset


def center_crop_window(shape, image_size: int):
    """Centre square of side image_size / (image_size + 32) * min(h, w), as [y, x, h, w]."""
    h, w = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * (image_size / (image_size + EVAL_PADDING)), tf.int32)
    side = tf.maximum(side, 1)
    return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])


def random_crop_window(shape, seed, image_size: int):
    """Random-resized-crop window (area 5-100%, aspect 3/4-4/3, 100 tries), else the centre crop."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=AREA_RANGE[0], aspect_ratio_range=ASPECT_RANGE, area_range=AREA_RANGE,
        max_attempts=CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))  # the sampler returns the whole image on failure
    return tf.where(failed, center_crop_window(shape, image_size), window)


def _resize(image, image_size: int):
    return tf.image.resize(image, [image_size, image_size], method="bilinear")


def train_image(encoded, seed, image_size: int, augment: str | None):
    """Random-resized crop, resize, random flip, optional AutoAugment/RandAugment; float32 [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    window = random_crop_window(tf.io.extract_jpeg_shape(encoded), seeds[0], image_size)
    image = _resize(tf.io.decode_and_crop_jpeg(encoded, window, channels=3), image_size)
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if augment:
        pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        pixels = (autoaugment.autoaugment if augment == "autoaugment" else autoaugment.randaugment)(pixels, seeds[2])
        image = tf.cast(pixels, tf.float32)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_image(encoded, image_size: int):
    """Centre crop and resize; float32 [0, 255]."""
    window = center_crop_window(tf.io.extract_jpeg_shape(encoded), image_size)
    image = _resize(tf.io.decode_and_crop_jpeg(encoded, window, channels=3), image_size)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _records(plan: RankPlan, parallel: bool) -> tf.data.Dataset:
    spans = tf.data.Dataset.from_tensor_slices((
        [s.path for s in plan.spans], tf.constant([s.start for s in plan.spans], tf.int64),
        tf.constant([s.stop - s.start for s in plan.spans], tf.int64)))

    def read(path, start, count):
        records = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER).skip(start).take(count)
        return records.map(lambda r: (r, path))

    return spans.interleave(read, cycle_length=min(len(plan.spans), 16) if parallel else 1,
                            num_parallel_calls=tf.data.AUTOTUNE if parallel else None, deterministic=True)


def build(plan: RankPlan, *, training: bool, batch_size: int, image_size: int, seed: int, epoch: int, rank: int,
          augment: str | None) -> tf.data.Dataset:
    """Batches of (float32 images, int32 labels) for ``plan``; evaluation pads with label -1."""
    ds = _records(plan, parallel=training)

    def train_example(record_and_path, seed):
        encoded, label = _parse(*record_and_path, plan.label_offset)
        return train_image(encoded, seed, image_size, augment), label

    def eval_example(record, path):
        encoded, label = _parse(record, path, plan.label_offset)
        return eval_image(encoded, image_size), label

    if training:
        ds = ds.shuffle(min(SHUFFLE_BUFFER, plan.examples), seed=derive_seed(seed, epoch, rank, 1),
                        reshuffle_each_iteration=False)
        ds = ds.take(plan.steps * batch_size)
        seeds = tf.data.Dataset.random(seed=derive_seed(seed, epoch, rank, 2)).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(train_example, num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=True)
    else:
        ds = ds.map(eval_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        padding = plan.steps * batch_size - plan.examples
        blank = (tf.zeros([image_size, image_size, 3], tf.float32), tf.constant(-1, tf.int32))
        ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
