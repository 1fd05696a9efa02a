"""Layers the model family needs beyond Keras: Horovod-synchronised batch norm."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """Batch norm whose training statistics cover the global batch across Horovod ranks.

    Horovod's own SyncBatchNormalization targets tf.keras 2 and is not called by Keras 3,
    so this overrides Keras 3's moments computation: each rank allreduces the sums of
    x and x^2 and its example count. With one rank it equals BatchNormalization.
    """

    def _moments(self, inputs, mask):
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if mask is not None or not hvd.is_initialized() or hvd.size() == 1:
            return super()._moments(inputs, mask)
        axes = self._reduction_axes
        # in float32 whatever the policy: a sum of squares of float16 activations overflows at 65504 (Keras
        # 3.15 upcasts the inputs before calling this; earlier 3.x releases may not)
        x = ops.cast(inputs, "float32")
        count = ops.cast(ops.prod(ops.take(ops.shape(x), axes)), "float32")
        local = ops.concatenate([ops.sum(x, axes)[None], ops.sum(ops.square(x), axes)[None],
                                 ops.broadcast_to(count, (1, x.shape[-1]))], axis=0)
        total = hvd.allreduce(tf.convert_to_tensor(local), op=hvd.Sum, name=None)
        mean = total[0] / total[2]
        variance = ops.maximum(total[1] / total[2] - ops.square(mean), 0.0)
        return ops.cast(mean, inputs.dtype), ops.cast(variance, inputs.dtype)


def batch_norm_layer(kind: str, **kwargs) -> keras.layers.Layer:
    """``plain`` (per-rank statistics, the reference default) or ``sync`` (global-batch statistics)."""
    if kind == "plain":
        return keras.layers.BatchNormalization(**kwargs)
    if kind == "sync":
        return SyncBatchNormalization(**kwargs)
    raise ValueError(f"unknown batch_norm {kind!r}; choose 'plain' or 'sync'")
