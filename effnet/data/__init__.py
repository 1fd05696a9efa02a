"""Input pipelines: ``build_dataset`` (``effnet.data.pipeline``: tf.data or DALI, sharded over ranks, resumable
inside an epoch), augmentation, mixing, and the validation pass that train and evaluate share (``validation``).

``build_dataset`` is imported lazily so that importing the package does not load TensorFlow.
"""


def __getattr__(name):
    if name in ("build_dataset", "Batches"):
        from effnet.data import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)
