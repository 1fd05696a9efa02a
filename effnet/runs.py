"""The layout of a training run's directory, shared by the train stage (writer) and its readers.

``RUN/model.keras`` and ``RUN/ema.keras`` are the final raw and EMA-averaged models in Keras'
native format (``keras.models.load_model`` rebuilds them, custom layers included);
``RUN/config.yaml`` is the effective configuration; ``RUN/train_summary.json`` is written last,
so its presence means the run finished. Checkpoints live in ``RUN/checkpoints/`` unless moved.
"""
from __future__ import annotations

from pathlib import Path

from effnet import checkpoints, jsonfile
from effnet.errors import UserError

RAW_MODEL = "model.keras"
EMA_MODEL = "ema.keras"
CONFIG = "config.yaml"
SUMMARY = "train_summary.json"
CHECKPOINTS = "checkpoints"
LOG = "train.dllog.json"
TENSORBOARD = "tensorboard"
WEIGHTS = {"ema": EMA_MODEL, "raw": RAW_MODEL}


def load_summary(run_dir: str | Path) -> dict:
    """The summary of a finished run (arch, num_classes, image_size, classes, ...); UserError otherwise."""
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    return jsonfile.read(Path(run_dir) / SUMMARY, "missing: no finished training run in this directory")


def load_model(run_dir: str | Path, weights: str = "ema", checkpoint: str | Path | None = None):
    """The model of a finished run with its ``weights`` ("ema", the default, or "raw").

    With ``checkpoint`` (a ``ckpt-*`` directory of any run of the same model), its weights of
    that kind replace the final ones; a checkpoint of another arch, class count or image size is
    refused, naming both sides.
    """
    import keras

    from effnet.models import layers  # noqa: F401  (registers the custom layers for loading)

    if weights not in WEIGHTS:
        raise UserError(f"weights {weights!r}: choose one of {', '.join(WEIGHTS)}")
    summary = load_summary(run_dir)
    path = Path(run_dir) / WEIGHTS[weights]
    if checkpoint is not None:
        path = Path(run_dir) / RAW_MODEL
    elif not path.exists():
        raise UserError(f"{path}: {weights} model missing (a run without EMA has only {RAW_MODEL})")
    model = keras.models.load_model(path, compile=False)
    if checkpoint is not None:
        _load_checkpoint(model, Path(checkpoint), weights, summary, run_dir)
    return model


def _load_checkpoint(model, path: Path, weights: str, summary: dict, run_dir) -> None:
    meta, arrays = checkpoints.read(path)
    checkpoints.check_model(path, meta, summary, str(run_dir))
    if weights == "ema" and not any(name.startswith("ema/") for name in arrays):
        raise UserError(f"{path}: holds no EMA weights (trained without EMA); use --weights raw")
    prefixes = ("ema/", "model/") if weights == "ema" else ("model/",)  # EMA covers weights and BN statistics
    for v in model.variables:
        name = next((p + v.path for p in prefixes if p + v.path in arrays), None)
        if name is None:
            raise UserError(f"{path}: no value for {v.path}: not a checkpoint of this run's model")
        v.assign(arrays[name])


def init_weights_file(path: str | Path) -> str:
    """The file a workflow tracks for ``train.init_from`` (whose change retrains): the weights file, a run's
    summary (written last) or a checkpoint's state."""
    path = Path(path)
    if path.name.startswith(checkpoints.PREFIX):
        return str(path / checkpoints.STATE)
    if path.suffix == ".h5":
        return str(path)
    return str(path / SUMMARY)


def init_weights_home(path: str | Path) -> Path:
    """What ``train.init_from`` reads within: a weights file's directory, the run directory (a checkpoint's
    run holds the model its arrays fill)."""
    path = Path(path)
    if path.name.startswith(checkpoints.PREFIX):
        return path.parent.parent
    return path.parent if path.suffix == ".h5" else path
