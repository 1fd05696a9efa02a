"""Data: TFRecord shards (prepare), DALI indexes (index), the demo dataset, input pipelines.

``build_dataset`` (see ``effnet.data.pipeline``) is imported lazily so that the data
stages' command line starts without loading TensorFlow.
"""


def __getattr__(name):
    if name in ("build_dataset", "Batches"):
        from effnet.data import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)
