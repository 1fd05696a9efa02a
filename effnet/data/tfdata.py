"""The tf.data input pipeline: parallel interleave over shards, fused JPEG decode-and-crop, AUTOTUNE.

Per image (all TensorFlow ops, no Python): parse, pick the crop window from the JPEG header,
``decode_and_crop_jpeg`` (decodes only the window), bilinear resize, and for training a
random horizontal flip and optional AutoAugment / RandAugment. Random choices are stateless,
seeded per example from (seed, epoch, rank), so an epoch is reproducible.
"""
from __future__ import annotations

from contextlib import contextmanager

import tensorflow as tf
from tensorflow.python.eager import context

from effnet.data import autoaugment
from effnet.data.sharding import RankPlan, derive_seed

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/class/label": tf.io.FixedLenFeature((), tf.int64),
}
# Random-resized crop as the reference (DeepLearningExamples' decode_crop_and_flip): the crop must cover
# at least MIN_OBJECT_COVERED of the image, so its area is effectively in [0.1, 1]; after CROP_ATTEMPTS
# failed tries the sampler returns the whole image.
AREA_RANGE = (0.05, 1.0)
MIN_OBJECT_COVERED = 0.1
ASPECT_RANGE = (0.75, 1.33)
CROP_ATTEMPTS = 100
EVAL_PADDING = 32  # the reference's crop padding: the centre crop is image_size / (image_size + 32)
SHUFFLE_BUFFER = 10_000
READ_BUFFER = 8 << 20


def _parse(record, path, label_offset: int):
    features = tf.io.parse_single_example(record, FEATURES)
    encoded = features["image/encoded"]
    checked = tf.debugging.Assert(tf.io.is_jpeg(encoded), [path, "holds a record whose image/encoded is not a JPEG"])
    with tf.control_dependencies([checked]):
        encoded = tf.identity(encoded)
    return encoded, tf.cast(features["image/class/label"], tf.int32) - label_offset


def center_crop_window(shape, image_size: int, crop_padding: int = EVAL_PADDING):
    """Centre square of side image_size / (image_size + crop_padding) * min(h, w), as [y, x, h, w]."""
    h, w = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * (image_size / (image_size + crop_padding)), tf.int32)
    side = tf.maximum(side, 1)
    return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])


def random_crop_window(shape, seed, min_area: float = MIN_OBJECT_COVERED):
    """Random-resized-crop window as [y, x, h, w] covering at least ``min_area`` of the image (the
    reference's min_object_covered, see AREA_RANGE); the whole image when sampling fails."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=min_area, aspect_ratio_range=ASPECT_RANGE, area_range=AREA_RANGE,
        max_attempts=CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def _resize(image, image_size: int):
    return tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=False)  # as DALI here


def train_image(encoded, seed, image_size: int, augment: str | None, min_area: float = MIN_OBJECT_COVERED,
                magnitude: int = autoaugment.RANDAUGMENT_MAGNITUDE):
    """Random-resized crop, resize, random flip, optional AutoAugment/RandAugment (at ``magnitude``); float32
    [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    window = random_crop_window(tf.io.extract_jpeg_shape(encoded), seeds[0], min_area)
    image = _resize(tf.io.decode_and_crop_jpeg(encoded, window, channels=3), image_size)
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if augment:
        pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        pixels = (autoaugment.autoaugment(pixels, seeds[2]) if augment == "autoaugment"
                  else autoaugment.randaugment(pixels, seeds[2], magnitude=magnitude))
        image = tf.cast(pixels, tf.float32)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_image(encoded, image_size: int, crop_padding: int = EVAL_PADDING):
    """Centre crop (see ``center_crop_window``) and resize of a JPEG; float32 [0, 255]."""
    window = center_crop_window(tf.io.extract_jpeg_shape(encoded), image_size, crop_padding)
    image = _resize(tf.io.decode_and_crop_jpeg(encoded, window, channels=3), image_size)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_crop(image, image_size: int, crop_padding: int = EVAL_PADDING):
    """``eval_image``'s centre crop and resize of a decoded uint8 HWC RGB image."""
    y, x, h, w = tf.unstack(center_crop_window(tf.shape(image), image_size, crop_padding))
    image = _resize(image[y:y + h, x:x + w], image_size)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_image_any(encoded, image_size: int, crop_padding: int = EVAL_PADDING):
    """``eval_image`` of a JPEG, PNG, GIF (first frame) or BMP: JPEGs decode exactly as in evaluation."""
    return tf.cond(tf.io.is_jpeg(encoded), lambda: eval_image(encoded, image_size, crop_padding),
                   lambda: eval_crop(tf.io.decode_image(encoded, channels=3, expand_animations=False), image_size,
                                     crop_padding))


def _read_spans(spans: tf.data.Dataset, parallel: bool, cycle_length: int) -> tf.data.Dataset:
    """(record, path) for each (path, start, count) span, interleaved across files when ``parallel``."""
    def read(path, start, count):
        records = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER).skip(start).take(count)
        return records.map(lambda r: (r, path))

    return spans.interleave(read, cycle_length=cycle_length if parallel else 1,
                            num_parallel_calls=tf.data.AUTOTUNE if parallel else None, deterministic=True)


def _span_table(plans: list[RankPlan]):
    """The spans of every epoch as flat tensors: epoch index, path, start, count."""
    rows = [(i, s.path, s.start, s.stop - s.start) for i, p in enumerate(plans) for s in p.spans]
    epoch, path, start, count = zip(*rows)
    return (tf.constant(epoch, tf.int64), tf.constant(path), tf.constant(start, tf.int64),
            tf.constant(count, tf.int64))


@contextmanager
def _no_global_seed():
    """Build datasets with per-epoch seed tensors: TF's seed logic compares them as Python bools when a
    global seed is set (``tf.random.set_seed``, ``keras.utils.set_random_seed``), so unset it meanwhile."""
    seed = context.global_seed()
    if seed is None:
        yield
        return
    tf.random.set_seed(None)
    try:
        yield
    finally:
        tf.random.set_seed(seed)


def train_examples(plans: list[RankPlan], *, batch_size: int, seed: int, first_epoch: int, rank: int,
                   skip: int = 0) -> tf.data.Dataset:
    """(encoded JPEG, label, example seed) of consecutive training epochs, one per plan, as one dataset.

    Epoch ``first_epoch + i`` reads ``plans[i]``, shuffles with a buffer seeded by (seed, epoch, rank)
    and draws per-example augmentation seeds from (seed, epoch, rank): an epoch's order and pixels
    depend on (seed, epoch, rank) only, whichever epoch the stream starts at. The first ``skip``
    batches (a resumed epoch's consumed part) are read but not decoded.
    """
    epochs = range(first_epoch, first_epoch + len(plans))
    table = _span_table(plans)
    shuffle_seeds = tf.constant([derive_seed(seed, e, rank, 1) for e in epochs], tf.int64)
    augment_seeds = tf.constant([derive_seed(seed, e, rank, 2) for e in epochs], tf.int64)
    per_epoch = plans[0].steps * batch_size
    buffer = min(SHUFFLE_BUFFER, plans[0].examples)
    cycle_length = min(max(len(p.spans) for p in plans), 16)

    def epoch_examples(i):
        rows = tf.equal(table[0], i)
        spans = tf.data.Dataset.from_tensor_slices(tuple(tf.boolean_mask(t, rows) for t in table[1:]))
        records = _read_spans(spans, True, cycle_length)
        records = records.shuffle(buffer, seed=tf.gather(shuffle_seeds, i), reshuffle_each_iteration=False)
        seeds = tf.data.Dataset.random(seed=tf.gather(augment_seeds, i)).batch(2)
        return tf.data.Dataset.zip((records.take(per_epoch), seeds))

    def parse(record_and_path, example_seed):
        return (*_parse(*record_and_path, plans[0].label_offset), example_seed)

    with _no_global_seed():
        ds = tf.data.Dataset.range(len(plans)).flat_map(epoch_examples).skip(skip * batch_size)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_examples(plan: RankPlan) -> tf.data.Dataset:
    """(encoded JPEG, label) of ``plan``'s records, in order."""
    spans = tf.data.Dataset.from_tensor_slices((
        [s.path for s in plan.spans], tf.constant([s.start for s in plan.spans], tf.int64),
        tf.constant([s.stop - s.start for s in plan.spans], tf.int64)))
    return _read_spans(spans, False, 1).map(lambda record, path: _parse(record, path, plan.label_offset))


def train_batches(plans: list[RankPlan], *, batch_size: int, image_size: int, seed: int, first_epoch: int,
                  rank: int, augment: str | None, skip: int = 0, min_area: float = MIN_OBJECT_COVERED,
                  magnitude: int = autoaugment.RANDAUGMENT_MAGNITUDE) -> tf.data.Dataset:
    """Training batches of consecutive epochs (see ``train_examples``), decoded and augmented."""
    ds = train_examples(plans, batch_size=batch_size, seed=seed, first_epoch=first_epoch, rank=rank, skip=skip)
    ds = ds.map(lambda encoded, label, example_seed: (
        train_image(encoded, example_seed, image_size, augment, min_area, magnitude), label),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_batches(plan: RankPlan, *, batch_size: int, image_size: int,
                 crop_padding: int = EVAL_PADDING) -> tf.data.Dataset:
    """Evaluation batches of ``plan`` in order, padded with label -1 to ``plan.steps`` full batches."""
    ds = eval_examples(plan).map(lambda encoded, label: (eval_image(encoded, image_size, crop_padding), label),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = plan.steps * batch_size - plan.examples
    blank = (tf.zeros([image_size, image_size, 3], tf.float32), tf.constant(-1, tf.int32))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
