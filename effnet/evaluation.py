"""Evaluation over one or many Horovod ranks: every validation example counted exactly once.

Shared by the train stage (train_and_eval) and the evaluate stage. Padding examples (label -1,
see ``effnet.data.Batches``) are masked out, and the sums are allreduced across ranks.
"""
from __future__ import annotations

import tensorflow as tf

SUMS = ("loss", "top1", "top5", "examples")


def make_eval_step(model):
    """A tf.function returning the batch's sums of (loss, top-1 hits, top-5 hits, real examples)."""
    @tf.function
    def step(images, labels):
        logits = tf.cast(model(images, training=False), tf.float32)
        real = labels >= 0
        safe = tf.where(real, labels, 0)
        loss = tf.keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
        k = min(5, logits.shape[-1])
        top1 = tf.math.in_top_k(safe, logits, 1)
        top5 = tf.math.in_top_k(safe, logits, k)
        mask = tf.cast(real, tf.float32)
        return tf.stack([tf.reduce_sum(loss * mask), tf.reduce_sum(tf.cast(top1, tf.float32) * mask),
                         tf.reduce_sum(tf.cast(top5, tf.float32) * mask), tf.reduce_sum(mask)])
    return step


def evaluate(step, batches, allreduce=None) -> dict:
    """Run ``step`` (from ``make_eval_step``) over ``batches``; metrics over all ranks when ``allreduce`` is given.

    Returns loss (mean cross-entropy), top1 and top5 (fractions) and examples (count).
    """
    totals = tf.zeros([len(SUMS)], tf.float32)
    for images, labels in batches:
        totals += step(images, labels)
    if allreduce is not None:
        totals = allreduce(totals)
    loss, top1, top5, examples = (float(v) for v in totals.numpy())
    denominator = max(examples, 1.0)
    return {"loss": loss / denominator, "top1": top1 / denominator, "top5": top5 / denominator,
            "examples": int(examples)}
