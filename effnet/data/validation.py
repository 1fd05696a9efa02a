"""The validation pass over one or many Horovod ranks: every validation example counted exactly once.

Shared by the train stage (its evaluations between epochs) and the evaluate stage: the validation batches
(``validation_batches``), a model's step over them and the metrics. Padding examples (label -1, see
``effnet.data.Batches``) are masked out, and the sums are allreduced across ranks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from effnet.data.pipeline import build_dataset


def validation_batches(data_dir: str, config: dict, world, image_size: int, crop_padding: int,
                       index_dir: str | None = None):
    """This rank's share of the validation split, at the config's eval.batch_size through its data.backend,
    centre-cropped as the model was trained (``image_size``, ``crop_padding``)."""
    return build_dataset(data_dir, "validation", backend=config["data"]["backend"],
                         batch_size=config["eval"]["batch_size"], image_size=image_size, rank=world.rank,
                         world_size=world.size, crop_padding=crop_padding, index_dir=index_dir)


@dataclass
class Evaluation:
    """Metrics over all ranks, the confusion matrix (rows: true class) and this rank's batch times."""

    loss: float
    top1: float
    top5: float
    examples: int
    confusion: np.ndarray
    batch_seconds: list[float] = field(default_factory=list)

    def metrics(self) -> dict:
        """loss (mean cross-entropy), top1 and top5 (fractions) and examples (count)."""
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "examples": self.examples}


def make_eval_step(model, num_classes: int):
    """A tf.function returning the batch's sums of (loss, top-1 hits, top-5 hits, real examples)
    and its confusion matrix, padding excluded."""
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
        sums = tf.stack([tf.reduce_sum(loss * mask), tf.reduce_sum(tf.cast(top1, tf.float32) * mask),
                         tf.reduce_sum(tf.cast(top5, tf.float32) * mask), tf.reduce_sum(mask)])
        confusion = tf.math.confusion_matrix(safe, tf.argmax(logits, -1, output_type=tf.int32), num_classes,
                                             weights=mask, dtype=tf.float32)
        return sums, confusion
    return step


def evaluate(step, batches, allreduce=None) -> Evaluation:
    """Run ``step`` (from ``make_eval_step``) over ``batches``; over all ranks when ``allreduce`` is given.

    Each batch's step is timed to its result (the next batch is read before the clock starts).
    """
    totals, confusion, seconds = None, None, []
    for images, labels in batches:
        start = time.perf_counter()
        sums, matrix = step(images, labels)
        sums = sums.numpy()
        seconds.append(time.perf_counter() - start)
        totals = sums if totals is None else totals + sums
        confusion = matrix if confusion is None else confusion + matrix
    if totals is None:
        raise ValueError("no evaluation batches")
    totals = tf.constant(totals)
    if allreduce is not None:
        totals, confusion = allreduce(totals), allreduce(confusion)
    loss, top1, top5, examples = (float(v) for v in np.asarray(totals))
    denominator = max(examples, 1.0)
    return Evaluation(loss / denominator, top1 / denominator, top5 / denominator, int(examples),
                      np.rint(np.asarray(confusion)).astype(np.int64), seconds)
