"""The layout of a training run's directory, shared by the train stage (writer) and its readers.

``RUN/model.keras`` and ``RUN/ema.keras`` are the final raw and EMA-averaged models in Keras'
native format (``keras.models.load_model`` rebuilds them, custom layers included);
``RUN/config.yaml`` is the effective configuration; ``RUN/train_summary.json`` is written last,
so its presence means the run finished. Checkpoints live in ``RUN/checkpoints/`` unless moved.
"""
from __future__ import annotations

from pathlib import Path

from effnet.errors import UserError

RAW_MODEL = "model.keras"
EMA_MODEL = "ema.keras"
CONFIG = "config.yaml"
SUMMARY = "train_summary.json"
CHECKPOINTS = "checkpoints"
LOG = "train.dllog.json"
TENSORBOARD = "tensorboard"
WEIGHTS = {"raw": RAW_MODEL, "ema": EMA_MODEL}


def load_model(run_dir: str | Path, weights: str = "ema"):
    """The trained model of a finished run: ``weights`` "ema" (default) or "raw"."""
    import keras

    from effnet.models import layers  # noqa: F401  (registers the custom layers for loading)

    path = Path(run_dir) / WEIGHTS[weights]
    if not (Path(run_dir) / SUMMARY).exists():
        raise UserError(f"{run_dir}: no finished training run ({SUMMARY} missing)")
    if not path.exists():
        raise UserError(f"{path}: {weights} model missing (a run without EMA has only {RAW_MODEL})")
    return keras.models.load_model(path, compile=False)
