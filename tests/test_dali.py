"""The DALI TF plugin runs on a CPU-only host: a pipeline through DALIDataset yields tensors."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image


def test_dali_dataset_on_cpu():
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.tf import DALIDataset

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        x = fn.constant(fdata=[1.0, 2.0, 3.0], shape=[3], dtype=types.FLOAT)
        return x * 2 + fn.constant(fdata=[0.5], shape=[1], dtype=types.FLOAT)

    p = pipe()
    p.build()
    with tf.device("/cpu:0"):
        ds = DALIDataset(pipeline=p, batch_size=4, output_shapes=((4, 3),),
                         output_dtypes=(tf.float32,), device_id=None)
        (batch,) = next(iter(ds))
    np.testing.assert_array_equal(batch.numpy(), np.tile([2.5, 4.5, 6.5], (4, 1)))


def test_dali_decodes_a_jpeg_on_cpu(tmp_path):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.tf import DALIDataset

    pixels = np.zeros((24, 40, 3), np.uint8)
    pixels[:, :20] = (250, 10, 10)
    pixels[:, 20:] = (10, 10, 250)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    data = np.frombuffer(buf.getvalue(), np.uint8)

    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def pipe():
        encoded = fn.constant(idata=data.astype(np.int32).tolist(), shape=[data.size], dtype=types.UINT8)
        return fn.decoders.image(encoded, device="cpu", output_type=types.RGB)

    p = pipe()
    p.build()
    with tf.device("/cpu:0"):
        ds = DALIDataset(pipeline=p, batch_size=2, output_shapes=((2, 24, 40, 3),),
                         output_dtypes=(tf.uint8,), device_id=None)
        (images,) = next(iter(ds))
    images = images.numpy().astype(int)
    assert images.shape == (2, 24, 40, 3)
    assert np.abs(images[:, :, :16] - [250, 10, 10]).max() < 20
    assert np.abs(images[:, :, 24:] - [10, 10, 250]).max() < 20


@pytest.mark.parametrize("training", [True, False])
def test_every_output_is_on_the_device_the_dataset_is_placed_on(training):
    """A DALIDataset under /gpu:N fails at its first batch when an output stays on the CPU (the plugin's
    output-device check); the graph's devices show it without a GPU (nothing is read before the build)."""
    from effnet.data.dali import build_pipeline

    def devices(device_id):
        pipe = build_pipeline(training=training, batch_size=2, image_size=32, seed=1, num_threads=1,
                              augment="autoaugment" if training else None, device_id=device_id,
                              files=["train-00000-of-00001"], indexes=["train-00000-of-00001.idx"])
        return [node.device for node in pipe._graph_out]

    assert devices(0) == ["gpu", "gpu"]
    assert devices(None) == ["cpu", "cpu"]
