"""Mixup and CutMix on a training batch (applied in the training step, after the input pipeline).

As the reference (DeepLearningExamples' mixup): every example draws its own weight
``lam ~ Beta(alpha, alpha)``, folded to ``max(lam, 1 - lam)`` so the example stays dominant,
and is paired with the example at the mirrored position of the batch. Mixup blends whole
images; CutMix pastes a box of about ``1 - lam`` of the area from the partner (the label
weight is the exact uncovered fraction). With both enabled, the first half of the batch is
cut-mixed and the second half mixed up. Labels become soft (one-hot mixed); label smoothing
is the loss's job. Random draws are stateless from ``seed`` ([2] ints).
"""
from __future__ import annotations

import tensorflow as tf


def _weights(alpha: float, count, seed) -> tf.Tensor:
    """``count`` draws of max(lam, 1 - lam), lam ~ Beta(alpha, alpha)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([count], seeds[0], alpha)
    b = tf.random.stateless_gamma([count], seeds[1], alpha)
    lam = a / tf.maximum(a + b, 1e-12)
    return tf.maximum(lam, 1.0 - lam)


def mixup(images, partners, lam):
    """Blend each image with its partner: ``lam * image + (1 - lam) * partner``; returns (images, weights)."""
    return lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * partners, lam


def cutmix(images, partners, lam, seed):
    """Paste a random box of about ``1 - lam`` of each image's area from its partner; returns (images, weights)."""
    shape = tf.shape(images)
    count, h, w = shape[0], shape[1], shape[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([count], seeds[0], 0, h, tf.int32)
    cx = tf.random.stateless_uniform([count], seeds[1], 0, w, tf.int32)
    y0, y1 = tf.maximum(cy - cut_h // 2, 0), tf.minimum(cy + cut_h // 2, h)
    x0, x1 = tf.maximum(cx - cut_w // 2, 0), tf.minimum(cx + cut_w // 2, w)
    ys, xs = tf.range(h)[None, :, None], tf.range(w)[None, None, :]
    box = ((ys >= y0[:, None, None]) & (ys < y1[:, None, None]) & (xs >= x0[:, None, None]) &
           (xs < x1[:, None, None]))
    mixed = tf.where(box[..., None], partners, images)
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
    return mixed, kept


def mix_batch(images, labels, num_classes: int, seed, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
    """Return ``(images, soft_labels)``: mixup and/or cutmix, or plain one-hot labels when both alphas are 0."""
    onehot = tf.one_hot(labels, num_classes, dtype=images.dtype)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, onehot
    seeds = tf.random.experimental.stateless_split(seed, 3)
    partners = tf.reverse(images, [0])
    count = tf.shape(images)[0]
    cut = count // 2 if mixup_alpha > 0 and cutmix_alpha > 0 else (count if cutmix_alpha > 0 else 0)
    parts_images, parts_weights = [], []
    if cutmix_alpha > 0:
        mixed, kept = cutmix(images[:cut], partners[:cut], _weights(cutmix_alpha, cut, seeds[0]), seeds[1])
        parts_images.append(mixed)
        parts_weights.append(kept)
    if mixup_alpha > 0:
        mixed, lam = mixup(images[cut:], partners[cut:], _weights(mixup_alpha, count - cut, seeds[2]))
        parts_images.append(mixed)
        parts_weights.append(lam)
    weights = tf.cast(tf.concat(parts_weights, 0), images.dtype)[:, None]
    return tf.concat(parts_images, 0), weights * onehot + (1 - weights) * tf.reverse(onehot, [0])
