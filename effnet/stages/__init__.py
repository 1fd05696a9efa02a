"""The pipeline's stages, one module or package per ``python -m effnet <command>`` and named as it, in the order
of the DAG (``STAGES``): each exposes ``register(subparsers)``, which adds its parser and sets ``func``, and
imports TensorFlow and friends lazily, so ``--help`` is fast. A stage reads what an earlier one left through
``effnet.formats``. No stage imports another, except the benchmark, which times what two of them run: the train
stage's ``Trainer`` (and its precisions) and the export stage's servable."""

STAGES = ("doctor", "demo_data", "prepare", "index", "train", "evaluate", "export", "infer", "benchmark", "report")
