"""Mixup and CutMix on a training batch (applied in the training step, after the input pipeline).

Each batch draws one mixing weight ``lam ~ Beta(alpha, alpha)`` and pairs every example with
the batch in reverse order. Mixup blends whole images; CutMix pastes a box covering 1 - lam of
the image (lam is then the exact uncovered fraction). With both enabled, each batch uses one
of the two with equal probability. Labels become soft (one-hot mixed); label smoothing is the
loss's job. Random draws are stateless from ``seed`` ([2] ints).
"""
from __future__ import annotations

import tensorflow as tf


def _beta(alpha: float, seed) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha)
    return a / (a + b)


def mixup(images, onehot, lam):
    """Blend each example with its partner in the reversed batch."""
    return lam * images + (1 - lam) * tf.reverse(images, [0]), lam * onehot + (1 - lam) * tf.reverse(onehot, [0])


def cutmix(images, onehot, lam, seed):
    """Paste a random box of about (1 - lam) of the area from the partner image."""
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([], seeds[0], 0, h, tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], 0, w, tf.int32)
    y0, y1 = tf.maximum(cy - cut_h // 2, 0), tf.minimum(cy + cut_h // 2, h)
    x0, x1 = tf.maximum(cx - cut_w // 2, 0), tf.minimum(cx + cut_w // 2, w)
    ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
    box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    mixed = tf.where(box[None, :, :, None], tf.reverse(images, [0]), images)
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
    return mixed, kept * onehot + (1 - kept) * tf.reverse(onehot, [0])


def mix_batch(images, labels, num_classes: int, seed, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
    """Return ``(images, soft_labels)``: mixup and/or cutmix, or plain one-hot labels when both alphas are 0."""
    onehot = tf.one_hot(labels, num_classes, dtype=images.dtype)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, onehot
    seeds = tf.random.experimental.stateless_split(seed, 4)
    do_mixup = lambda: mixup(images, onehot, _beta(mixup_alpha, seeds[1]))  # noqa: E731
    do_cutmix = lambda: cutmix(images, onehot, _beta(cutmix_alpha, seeds[2]), seeds[3])  # noqa: E731
    if cutmix_alpha <= 0:
        return do_mixup()
    if mixup_alpha <= 0:
        return do_cutmix()
    return tf.cond(tf.random.stateless_uniform([], seeds[0]) < 0.5, do_cutmix, do_mixup)
